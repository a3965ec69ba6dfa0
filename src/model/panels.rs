//! Panel-major weights for decoding: `W` `[k, n]` stored as `[⌈n / w⌉][k][w]`, where a panel is
//! `w` columns wide and one row of a panel is one 64-byte cache line (16 f32 or 32 16-bit
//! values); the last panel is padded with zeros.
//!
//! A decode step multiplies one activation row by every weight. Row-major `[k, n]` split into
//! column tiles across threads makes each thread read a short piece of every row and jump to the
//! next (576–1536 bytes for a SmolLM2-135M layer), and on the Zen 4 development VM that pattern
//! streams well below the memory bus; a panel is one contiguous run of `k` lines, and a thread's
//! share is a run of whole panels. Probe (`panel_speed`, 30 SmolLM2-135M layers' linears, one
//! token): row-major f32 19.7–22.6 ms, panels 13.0–14.5 ms; bf16 12.8–14.9 → 7.6–7.9 ms
//! (`benches/RESULTS.md`, session 9).
//!
//! Each output is summed over the rows in row order with fused multiply-adds, starting from
//! zero, exactly as [`super::matvec`] does, so the results are bit for bit the same.
//!
//! Groundwork: [`super::linear::Linear`] still holds row-major weights; the plan for holding
//! panels (load, merge, prefill, export) is in NOTES.md.

use burn::prelude::*;

use super::weight::Weight;

/// Columns per panel of a held weight (16 for every dtype: one layout for all kernels; 32-wide
/// bf16 panels streamed only ~3% faster).
pub(crate) const PANEL: usize = 16;

/// How a held `[k, n]` weight's values lie in its storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Row-major `[k, n]`.
    Rows,
    /// Panel-major `[⌈n / 16⌉][k][16]`, the last panel padded with zeros ([`to_panels_of`]).
    Panels,
}

/// The logical shape of a held weight and its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WeightShape {
    pub k: usize,
    pub n: usize,
    pub layout: Layout,
}

impl WeightShape {
    /// A row-major `[k, n]` weight.
    pub(crate) fn rows([k, n]: [usize; 2]) -> Self {
        Self {
            k,
            n,
            layout: Layout::Rows,
        }
    }

    /// Values the storage holds.
    pub(crate) fn len(&self) -> usize {
        match self.layout {
            Layout::Rows => self.k * self.n,
            Layout::Panels => self.n.div_ceil(PANEL) * self.k * PANEL,
        }
    }

    /// Where element `(i, j)` lies; the rest of its row up to the next multiple of 16 columns
    /// follows it in both layouts (a 16-column vector that starts at a multiple of 16 is
    /// contiguous).
    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> usize {
        match self.layout {
            Layout::Rows => i * self.n + j,
            Layout::Panels => (j / PANEL) * self.k * PANEL + i * PANEL + j % PANEL,
        }
    }

    /// How far apart the same columns of consecutive rows lie.
    #[inline(always)]
    pub(crate) fn row_stride(&self) -> usize {
        match self.layout {
            Layout::Rows => self.n,
            Layout::Panels => PANEL,
        }
    }
}

/// Whether this process holds `B`'s linear weights as panels: burn-flex (the host kernels read
/// them) on a CPU with AVX-512F (the panel kernels' only form; elsewhere rows are faster).
pub(crate) fn hold_panels<B: burn::prelude::Backend>() -> bool {
    #[cfg(all(feature = "flex", target_arch = "x86_64"))]
    {
        use std::any::TypeId;
        HOLD_PANELS
            && TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<burn_flex::FlexTensor>()
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(feature = "flex", target_arch = "x86_64")))]
    false
}

/// The switch for [`hold_panels`].
const HOLD_PANELS: bool = true;

/// The panels of the transpose of `parts` (each `[rows_p, cols]` row-major) stacked by rows:
/// a checkpoint's `[out, in]` weight (three parts for a fused q/k/v) straight into panels of the
/// `[in, out]` weight the model multiplies by, each panel (16 stored rows) converted through a
/// small f32 scratch by `map` into `T`. Panels are built in parallel (each is a contiguous
/// piece of the result).
pub(crate) fn panels_map<S: Weight, T: Copy + bytemuck::Zeroable + Send>(
    parts: &[&[S]],
    cols: usize,
    map: impl Fn(&[f32], &mut [T]) + Sync,
) -> Vec<T> {
    let k = cols;
    if k == 0 {
        return Vec::new();
    }
    assert!(parts.iter().all(|p| p.len() % k == 0));
    let rows: usize = parts.iter().map(|p| p.len() / k).sum();
    let panels = rows.div_ceil(PANEL);
    let mut out = super::buffer::zeroed::<T>(panels * k * PANEL);
    // Stored row `r` of the stack.
    let row = |r: usize| -> &[S] {
        let mut r = r;
        for p in parts {
            let n = p.len() / k;
            if r < n {
                return &p[r * k..(r + 1) * k];
            }
            r -= n;
        }
        &[]
    };
    let run = |scratch: &mut Vec<f32>, (q, dst): (usize, &mut [T])| {
        super::buffer::populate(dst);
        let first = q * PANEL;
        let here = PANEL.min(rows - first);
        if here < PANEL {
            scratch.fill(0.0);
        }
        for c in 0..here {
            for (i, v) in row(first + c).iter().enumerate() {
                scratch[i * PANEL + c] = v.to_f32();
            }
        }
        map(scratch, dst);
    };
    let scratch = || vec![0f32; k * PANEL];
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if out.len() >= 1 << 16 {
            out.par_chunks_mut(k * PANEL)
                .enumerate()
                .for_each_init(scratch, run);
            return out;
        }
    }
    let mut s = scratch();
    out.chunks_mut(k * PANEL)
        .enumerate()
        .for_each(|item| run(&mut s, item));
    out
}

/// A held row-major `[k, n]` tensor (f32, bf16 or f16) as panels `[⌈n/16⌉·k, 16]` of the same
/// dtype.
pub(crate) fn panel_tensor<B: Backend>(t: &Tensor<B, 2>) -> Tensor<B, 2> {
    let [k, n] = t.dims();
    let shape = [n.div_ceil(PANEL) * k, PANEL];
    relayout(
        t,
        shape,
        |d| to_panels_of(d, k, n, PANEL),
        |d| to_panels_of(d, k, n, PANEL),
        |d| to_panels_of(d, k, n, PANEL),
    )
}

/// The row-major `[k, n]` tensor of panels made by [`panel_tensor`].
pub(crate) fn rows_tensor<B: Backend>(t: &Tensor<B, 2>, k: usize, n: usize) -> Tensor<B, 2> {
    relayout(
        t,
        [k, n],
        |d| from_panels_of(d, k, n, PANEL),
        |d| from_panels_of(d, k, n, PANEL),
        |d| from_panels_of(d, k, n, PANEL),
    )
}

/// `t`'s values rearranged by the function for its dtype into a tensor of `shape`, same dtype.
fn relayout<B: Backend>(
    t: &Tensor<B, 2>,
    shape: [usize; 2],
    f32s: impl Fn(&[f32]) -> Vec<f32>,
    bf16s: impl Fn(&[half::bf16]) -> Vec<half::bf16>,
    f16s: impl Fn(&[half::f16]) -> Vec<half::f16>,
) -> Tensor<B, 2> {
    use burn::tensor::{DType, TensorCreationOptions};
    let dev = t.device();
    let opts = |dt| TensorCreationOptions::<B>::new(dev.clone()).with_dtype(dt);
    let data = t.to_data();
    match data.dtype {
        DType::BF16 => {
            if let Ok(d) = data.as_slice::<half::bf16>() {
                return Tensor::from_data(TensorData::new(bf16s(d), shape), opts(DType::BF16));
            }
        }
        DType::F16 => {
            if let Ok(d) = data.as_slice::<half::f16>() {
                return Tensor::from_data(TensorData::new(f16s(d), shape), opts(DType::F16));
            }
        }
        _ => {}
    }
    let wide = super::precision::host_f32(t);
    Tensor::from_data(TensorData::new(f32s(&wide), shape), &dev)
}

/// Columns `ids` of a `[k, n]` weight held in `t` as `shape` says, as f32 rows `[ids.len(), k]`
/// (the embedding lookup of a model whose head serves as its embedding).
pub(crate) fn columns_of<B: Backend>(
    t: &Tensor<B, 2>,
    shape: WeightShape,
    ids: &[u32],
) -> Tensor<B, 2> {
    fn gather<W: Weight>(w: &[W], shape: WeightShape, ids: &[u32], out: &mut [f32]) {
        for (&j, row) in ids.iter().zip(out.chunks_mut(shape.k)) {
            for (i, o) in row.iter_mut().enumerate() {
                *o = w[shape.at(i, j as usize)].to_f32();
            }
        }
    }
    let k = shape.k;
    let mut out = vec![0f32; ids.len() * k];
    let mut done = false;
    #[cfg(feature = "flex")]
    if let Some(ft) = super::weight::flex(t) {
        if let Some(h) = super::weight::held(&ft).filter(|h| h.len() == shape.len()) {
            match h {
                super::weight::Held::F32(w) => gather(w, shape, ids, &mut out),
                super::weight::Held::Bf16(w) => gather(w, shape, ids, &mut out),
                super::weight::Held::F16(w) => gather(w, shape, ids, &mut out),
            }
            done = true;
        }
    }
    if !done {
        gather(&super::precision::host_f32(t), shape, ids, &mut out);
    }
    Tensor::from_data(TensorData::new(out, [ids.len(), k]), &t.device())
}

/// Columns per panel for weights of type `W`: one 64-byte line of a row.
pub(crate) const fn width<W>() -> usize {
    64 / std::mem::size_of::<W>()
}

/// Panels a `[k, n]` weight of type `W` takes.
pub(crate) const fn count<W>(n: usize) -> usize {
    n.div_ceil(width::<W>())
}

/// A row-major `[k, n]` weight in panel-major order (the last panel padded with zeros).
pub(crate) fn to_panels<W: Copy + bytemuck::Zeroable>(w: &[W], k: usize, n: usize) -> Vec<W> {
    to_panels_of(w, k, n, width::<W>())
}

/// [`to_panels`] with panels `wd` columns wide.
pub(crate) fn to_panels_of<W: Copy + bytemuck::Zeroable>(
    w: &[W],
    k: usize,
    n: usize,
    wd: usize,
) -> Vec<W> {
    assert_eq!(w.len(), k * n, "weight is not [k, n]");
    // Huge pages where the system gives them on request (as loaded weights have).
    let mut p = super::buffer::zeroed::<W>(n.div_ceil(wd) * k * wd);
    if k == 0 {
        return p;
    }
    for (q, panel) in p.chunks_mut(k * wd).enumerate() {
        let (j0, cols) = (q * wd, wd.min(n - q * wd));
        for (i, line) in panel.chunks_mut(wd).enumerate() {
            line[..cols].copy_from_slice(&w[i * n + j0..i * n + j0 + cols]);
        }
    }
    p
}

/// The row-major `[k, n]` weight of panels made by [`to_panels`].
pub(crate) fn from_panels<W: Copy + bytemuck::Zeroable>(p: &[W], k: usize, n: usize) -> Vec<W> {
    from_panels_of(p, k, n, width::<W>())
}

/// [`from_panels`] of panels `wd` columns wide.
pub(crate) fn from_panels_of<W: Copy + bytemuck::Zeroable>(
    p: &[W],
    k: usize,
    n: usize,
    wd: usize,
) -> Vec<W> {
    assert_eq!(
        p.len(),
        n.div_ceil(wd) * k * wd,
        "not the panels of a [k, n] weight"
    );
    let mut w = super::buffer::zeroed::<W>(k * n);
    if k == 0 {
        return w;
    }
    for (q, panel) in p.chunks(k * wd).enumerate() {
        let (j0, cols) = (q * wd, wd.min(n - q * wd));
        for (i, line) in panel.chunks(wd).enumerate() {
            w[i * n + j0..i * n + j0 + cols].copy_from_slice(&line[..cols]);
        }
    }
    w
}

/// `y = x·W` for `W` `[x.len(), y.len()]` held as panels ([`to_panels`]); each thread takes a
/// run of whole panels.
pub(crate) fn matvec_panels<W: Weight>(x: &[f32], p: &[W], y: &mut [f32]) {
    matvec_panels_of(x, p, y, width::<W>())
}

/// [`matvec_panels`] on panels `wd` (16 or 32) columns wide.
pub(crate) fn matvec_panels_of<W: Weight>(x: &[f32], p: &[W], y: &mut [f32], wd: usize) {
    let (k, n) = (x.len(), y.len());
    let panels = n.div_ceil(wd);
    assert!(p.len() >= panels * k * wd, "panels too short for [k, n]");
    if n == 0 {
        return;
    }
    let threads = super::weight::threads();
    let per = panels.div_ceil(threads);
    let run = |(t, out): (usize, &mut [f32])| panel_run_of(x, p, t * per, out, wd);
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if threads > 1 && panels > 1 {
            y.par_chunks_mut(per * wd).enumerate().for_each(run);
            return;
        }
    }
    y.chunks_mut(per * wd).enumerate().for_each(run);
}

/// Outputs of panels `first..` into `out` (whole panels but perhaps the last).
pub(crate) fn panel_run_of<W: Weight>(
    x: &[f32],
    p: &[W],
    first: usize,
    out: &mut [f32],
    wd: usize,
) {
    let k = x.len();
    let end = (first * wd + out.len()).div_ceil(wd);
    assert!(p.len() >= end * k * wd);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the panels read lie in `p` (asserted above).
            unsafe {
                match wd / 16 {
                    1 => x86::run_avx512::<W, 1>(x, p, first, out),
                    _ => x86::run_avx512::<W, 2>(x, p, first, out),
                }
            }
            return;
        }
    }
    for (q, chunk) in out.chunks_mut(wd).enumerate() {
        let panel = &p[(first + q) * k * wd..(first + q + 1) * k * wd];
        chunk.fill(0.0);
        for (&xi, line) in x.iter().zip(panel.chunks(wd)) {
            for (o, &v) in chunk.iter_mut().zip(line) {
                *o = xi.mul_add(v.to_f32(), *o);
            }
        }
    }
}

/// `y = x·W` for `m ≤ 8` rows (`x` `[m, k]`, `y` `[m, n]` row-major) with `W` held as panels
/// (`shape.layout` is [`Layout::Panels`]): each task takes a run of whole panels and walks each
/// panel once down all of `k`, every row's outputs in registers. The CPU must have AVX-512F.
pub(crate) fn rows_panels<W: Weight>(
    x: &[f32],
    m: usize,
    w: &[W],
    shape: WeightShape,
    y: &mut [f32],
) {
    let (k, n) = (shape.k, shape.n);
    assert!(
        shape.layout == Layout::Panels
            && (1..=8).contains(&m)
            && x.len() == m * k
            && w.len() == shape.len()
            && y.len() == m * n
    );
    #[cfg(target_arch = "x86_64")]
    {
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        // The rows interleaved (`[k][8]`, zero past `m`): one contiguous read per weight row.
        let mut xi = vec![0f32; k * 8];
        for (r, row) in x.chunks_exact(k).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                xi[i * 8 + r] = v;
            }
        }
        let panels = n.div_ceil(PANEL);
        let threads = super::weight::threads();
        let per = panels.div_ceil(threads);
        let tasks = panels.div_ceil(per);
        let y_addr = y.as_mut_ptr() as usize;
        let run = |t: usize| {
            let (j0, j1) = (t * per * PANEL, ((t + 1) * per * PANEL).min(n));
            // SAFETY: AVX-512F is present (asserted); tasks write disjoint column ranges
            // `j0..j1` of `y` (`m × n`, alive for the whole loop); reads stay in `w`
            // (`shape.len()` values, asserted) and `xi` (`k × 8`).
            unsafe { x86::rows_avx512(&xi, m, w, shape, j0, j1, y_addr as *mut f32) };
        };
        #[cfg(feature = "flex")]
        {
            use rayon::prelude::*;
            if threads > 1 && tasks > 1 {
                (0..tasks).into_par_iter().for_each(run);
                return;
            }
        }
        (0..tasks).for_each(run);
    }
    #[cfg(not(target_arch = "x86_64"))]
    panic!("panel-major weights need AVX-512F");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::weight::Weight;
    use super::{WeightShape, PANEL};
    use std::arch::x86_64::*;

    /// Columns `j0..j1` (`j0` a multiple of 16) of `m ≤ 8` rows, two panels at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `xi` is `[k][8]`; `w` holds `shape.len()` values as panels; `y` is
    /// `[m, shape.n]` and no one else writes its columns `j0..j1` meanwhile.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn rows_avx512<W: Weight>(
        xi: &[f32],
        m: usize,
        w: &[W],
        shape: WeightShape,
        j0: usize,
        j1: usize,
        y: *mut f32,
    ) {
        let (k, n) = (shape.k, shape.n);
        let mut j = j0;
        while j < j1 {
            let two = j + PANEL < j1;
            let p0 = w.as_ptr().add(shape.at(0, j));
            let p1 = if two {
                w.as_ptr().add(shape.at(0, j + PANEL))
            } else {
                p0
            };
            let mut acc = [[_mm512_setzero_ps(); 8]; 2];
            for i in 0..k {
                _mm_prefetch::<_MM_HINT_T1>((p0.add(i * PANEL) as *const i8).add(1024));
                let w0 = W::load16(p0.add(i * PANEL));
                let w1 = if two {
                    _mm_prefetch::<_MM_HINT_T1>((p1.add(i * PANEL) as *const i8).add(1024));
                    W::load16(p1.add(i * PANEL))
                } else {
                    _mm512_setzero_ps()
                };
                let xr = xi.as_ptr().add(i * 8);
                for r in 0..8 {
                    if r < m {
                        let xv = _mm512_set1_ps(*xr.add(r));
                        acc[0][r] = _mm512_fmadd_ps(xv, w0, acc[0][r]);
                        acc[1][r] = _mm512_fmadd_ps(xv, w1, acc[1][r]);
                    }
                }
            }
            for (t, rows) in acc.iter().enumerate().take(1 + usize::from(two)) {
                let c = j + t * PANEL;
                let left = (j1 - c).min(PANEL);
                let mask = ((1u32 << left) - 1) as __mmask16;
                for (r, a) in rows.iter().enumerate().take(m) {
                    _mm512_mask_storeu_ps(y.add(r * n + c), mask, *a);
                }
            }
            j += if two { 2 * PANEL } else { PANEL };
        }
    }

    /// Panels read side by side (`GROUP` streams; up to 8 accumulators for 16-bit weights).
    const GROUP: usize = 4;

    /// [`super::panel_run_of`] with `V` vectors of 16 lanes per panel line.
    ///
    /// # Safety
    /// The CPU has AVX-512F, `V · 16` is the panel width of `W` and panels
    /// `first..⌈(first · width + out.len()) / width⌉` of `x.len()` lines each lie in `p`.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn run_avx512<W: Weight, const V: usize>(
        x: &[f32],
        p: &[W],
        first: usize,
        out: &mut [f32],
    ) {
        let (k, wd) = (x.len(), V * 16);
        let panels = out.len().div_ceil(wd);
        let mut q = 0;
        while q < panels {
            let np = (panels - q).min(GROUP);
            // Pointers past `np` repeat the last panel (read, never stored).
            let base: [*const W; GROUP] =
                std::array::from_fn(|t| p.as_ptr().add((first + q + t.min(np - 1)) * k * wd));
            let mut acc = [[_mm512_setzero_ps(); V]; GROUP];
            for i in 0..k {
                let xi = _mm512_set1_ps(*x.get_unchecked(i));
                for t in 0..GROUP {
                    if t < np {
                        let line = base[t].add(i * wd);
                        // A kilobyte ahead in the panel's stream, into L2.
                        _mm_prefetch::<_MM_HINT_T1>((line as *const i8).add(1024));
                        for (v, a) in acc[t].iter_mut().enumerate() {
                            *a = _mm512_fmadd_ps(xi, W::load16(line.add(16 * v)), *a);
                        }
                    }
                }
            }
            for (t, lanes) in acc.iter().enumerate().take(np) {
                let j = (q + t) * wd;
                let cols = wd.min(out.len() - j);
                if cols == wd {
                    for (v, a) in lanes.iter().enumerate() {
                        _mm512_storeu_ps(out.as_mut_ptr().add(j + 16 * v), *a);
                    }
                } else {
                    let mut tmp = [0f32; 32];
                    for (v, a) in lanes.iter().enumerate() {
                        _mm512_storeu_ps(tmp.as_mut_ptr().add(16 * v), *a);
                    }
                    out[j..j + cols].copy_from_slice(&tmp[..cols]);
                }
            }
            q += np;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(seed: u32) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    #[test]
    fn panels_hold_the_weight_and_give_it_back() {
        let mut r = rnd(3);
        for (k, n) in [(0, 5), (1, 1), (3, 17), (5, 32), (7, 33), (2, 100)] {
            let w: Vec<f32> = (0..k * n).map(|_| r()).collect();
            let p = to_panels(&w, k, n);
            assert_eq!(p.len(), n.div_ceil(16) * k * 16, "k={k} n={n}");
            if k > 0 && n > 0 {
                // Row i, column j sits in panel j / 16, line i, lane j % 16.
                let (i, j) = (k - 1, n - 1);
                assert_eq!(p[(j / 16) * k * 16 + i * 16 + j % 16], w[i * n + j]);
            }
            assert_eq!(from_panels(&p, k, n), w, "k={k} n={n}");
            let h: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let ph = to_panels(&h, k, n);
            assert_eq!(ph.len(), n.div_ceil(32) * k * 32);
            assert_eq!(from_panels(&ph, k, n), h);
        }
    }

    /// The same bits as the row-major kernel, for every weight type and awkward shapes (partial
    /// panels, fewer panels than threads, groups of panels cut short).
    #[test]
    fn panels_give_the_row_major_kernels_results_bit_for_bit() {
        let mut r = rnd(11);
        for (k, n) in [
            (1, 1),
            (9, 17),
            (3, 33),
            (130, 4099),
            (576, 960),
            (8, 65),
            (2, 31),
        ] {
            let x: Vec<f32> = (0..k).map(|_| r()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| r()).collect();
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
            let check = |name: &str, want: &dyn Fn(&mut [f32]), got: &dyn Fn(&mut [f32])| {
                let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                want(&mut a);
                got(&mut b);
                assert!(same(&a, &b), "{name} k={k} n={n}");
            };
            let p = to_panels(&w, k, n);
            check("f32", &|y| super::super::matvec::matvec(&x, &w, y), &|y| {
                matvec_panels(&x, &p, y)
            });
            let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let pb = to_panels(&bf, k, n);
            check(
                "bf16",
                &|y| super::super::matvec::matvec(&x, &bf, y),
                &|y| matvec_panels(&x, &pb, y),
            );
            let pb16 = to_panels_of(&bf, k, n, 16);
            check(
                "bf16, 16 wide",
                &|y| super::super::matvec::matvec(&x, &bf, y),
                &|y| matvec_panels_of(&x, &pb16, y, 16),
            );
            let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let ph = to_panels(&hf, k, n);
            check("f16", &|y| super::super::matvec::matvec(&x, &hf, y), &|y| {
                matvec_panels(&x, &ph, y)
            });
            // The portable loop too (the kernel's fallback on CPUs without AVX-512).
            let mut y = vec![f32::NAN; n];
            for (q, chunk) in y.chunks_mut(16).enumerate() {
                let panel = &p[q * k * 16..(q + 1) * k * 16];
                chunk.fill(0.0);
                for (&xi, line) in x.iter().zip(panel.chunks(16)) {
                    for (o, &v) in chunk.iter_mut().zip(line) {
                        *o = xi.mul_add(v, *o);
                    }
                }
            }
            check("portable", &|a| a.copy_from_slice(&y), &|b| {
                matvec_panels(&x, &p, b)
            });
        }
    }
}

/// Every kernel that reads a held weight gives the same bits from panels as from rows: one row
/// (with a bias and low-rank terms), a few rows (batched decoding) and many (prefill), in f32 and
/// 16 bits, for shapes with partial panels.
#[cfg(all(test, feature = "flex", target_arch = "x86_64"))]
mod kernels {
    use super::*;
    use crate::backend::Flex;
    use crate::model::matvec::{try_linear, try_linear_in, RowTerm};
    use crate::model::precision::{held_tensor, host_f32};
    use crate::model::WeightDtype;
    use burn::prelude::*;

    #[test]
    fn every_kernel_reads_panels_as_rows_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return; // panels are only held on CPUs with AVX-512F
        }
        let dev = Default::default();
        let mut s = 5u32;
        let mut rnd = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        for (k, n) in [(1, 1), (9, 17), (70, 100), (576, 960), (33, 250)] {
            let w = rnd(k * n);
            let (a, b, bias) = (rnd(k * 4), rnd(4 * n), rnd(n));
            let t2 = |v: Vec<f32>, d: [usize; 2]| {
                Tensor::<Flex, 2>::from_data(TensorData::new(v, d), &dev)
            };
            let (at, bt) = (t2(a, [k, 4]), t2(b, [4, n]));
            let bias = Tensor::<Flex, 1>::from_data(TensorData::new(bias, [n]), &dev);
            for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16] {
                let rows = held_tensor::<Flex>(w.clone(), [k, n], dtype, &dev);
                let values = host_f32(&rows);
                let panels = held_tensor::<Flex>(
                    to_panels_of(&values, k, n, PANEL),
                    [n.div_ceil(PANEL) * k, PANEL],
                    dtype,
                    &dev,
                );
                let shape = WeightShape {
                    k,
                    n,
                    layout: Layout::Panels,
                };
                for m in [1, 3, 8, 9, 20] {
                    let x = t2(rnd(m * k), [m, k]);
                    let terms = [RowTerm {
                        a: &at,
                        b: &bt,
                        scale: 0.5,
                        rows: None,
                    }];
                    for (bias, terms) in [(None, &[][..]), (Some(&bias), &terms[..])] {
                        let want = try_linear(&x, &rows, bias, terms).map(|y| host_f32(&y));
                        let got =
                            try_linear_in(&x, &panels, shape, bias, terms).map(|y| host_f32(&y));
                        assert!(want.is_some(), "{dtype:?} k={k} n={n} m={m}");
                        let same = |p: &[f32], q: &[f32]| {
                            p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits())
                        };
                        assert!(
                            same(&want.unwrap(), &got.unwrap()),
                            "{dtype:?} k={k} n={n} m={m} bias={}",
                            bias.is_some()
                        );
                    }
                }
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod speed {
    use super::*;

    /// `cargo test --lib panel_speed -- --ignored --nocapture`: the linears of 30 SmolLM2-135M
    /// layers (no head), one token, row-major (today's kernel) against panels, f32 and bf16, in
    /// alternating rounds on rayon's pool.
    #[test]
    #[ignore]
    fn panel_speed() {
        const LAYER: [(usize, usize); 5] = [
            (576, 960),
            (576, 576),
            (576, 1536),
            (576, 1536),
            (1536, 576),
        ];
        let shapes: Vec<(usize, usize)> = (0..30).flat_map(|_| LAYER).collect();
        let rows: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(k, n)| {
                (0..k * n)
                    .map(|i| ((i % 251) as f32 - 125.0) * 1e-3)
                    .collect()
            })
            .collect();
        let narrow = |w: &Vec<f32>| -> Vec<half::bf16> {
            w.iter().map(|&v| half::bf16::from_f32(v)).collect()
        };
        let rows16: Vec<Vec<half::bf16>> = rows.iter().map(narrow).collect();
        let pan: Vec<Vec<f32>> = rows
            .iter()
            .zip(&shapes)
            .map(|(w, &(k, n))| to_panels(w, k, n))
            .collect();
        let pan16: Vec<Vec<half::bf16>> = rows16
            .iter()
            .zip(&shapes)
            .map(|(w, &(k, n))| to_panels(w, k, n))
            .collect();
        let pan16n: Vec<Vec<half::bf16>> = rows16
            .iter()
            .zip(&shapes)
            .map(|(w, &(k, n))| to_panels_of(w, k, n, 16))
            .collect();
        let x = vec![0.01f32; 1536];
        let mut y = vec![0f32; 1536];
        let mut t = [0f64; 5];
        rayon::scope(|_| {
            for _ in 0..10 {
                for (v, tv) in t.iter_mut().enumerate() {
                    let s = std::time::Instant::now();
                    for _ in 0..5 {
                        for (l, &(k, n)) in shapes.iter().enumerate() {
                            let (x, y) = (&x[..k], &mut y[..n]);
                            match v {
                                0 => super::super::matvec::matvec(x, &rows[l], y),
                                1 => matvec_panels(x, &pan[l], y),
                                2 => super::super::matvec::matvec(x, &rows16[l], y),
                                3 => matvec_panels(x, &pan16[l], y),
                                _ => matvec_panels_of(x, &pan16n[l], y, 16),
                            }
                        }
                    }
                    *tv += s.elapsed().as_secs_f64();
                }
            }
        });
        let ms = t.map(|v| v / 50.0 * 1e3);
        println!(
            "f32: row-major {:.2} ms, panels {:.2} ms; bf16: row-major {:.2} ms, panels {:.2} ms; \
             bf16 / f32 speed: row-major {:.2}, panels {:.2}",
            ms[0],
            ms[1],
            ms[2],
            ms[3],
            ms[0] / ms[2],
            ms[1] / ms[3]
        );
        println!("bf16 panels 16 columns wide (as f32's): {:.2} ms", ms[4]);
    }
}
