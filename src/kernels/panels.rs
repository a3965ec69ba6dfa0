//! Panel-major weights for decoding: `W` `[k, n]` stored as `[⌈n / w⌉][k][w]`, where a panel is
//! `w` columns wide (16 for held weights, whatever the dtype: a 64-byte line of f32 or 32 bytes
//! of 16-bit values per panel row; the probe also tries 32-wide 16-bit panels); the last panel
//! is padded with zeros.
//!
//! A decode step multiplies one activation row by every weight. Row-major `[k, n]` split into
//! column tiles across threads makes each thread read a short piece of every row and jump to the
//! next (576–1536 bytes for a SmolLM2-135M layer), a pattern that streams well below the memory
//! bus on the CPUs measured; a panel is one contiguous run of `k` lines, and a thread's share is
//! a run of whole panels, which streams faster (the `panel_speed` probe; measurements:
//! benches/RESULTS.md).
//!
//! Each output is summed over the rows in row order with fused multiply-adds, starting from
//! zero, exactly as [`crate::kernels::linear::tiles`] does, so the results are bit for bit the
//! same.
//!
//! [`crate::model::linear::Linear`] holds its weight as 16-column panels on burn-flex when the
//! CPU has AVX-512F or AVX2 + FMA + F16C ([`crate::backend::ops::ModelOps::holds_panels`]); every
//! kernel that reads a held weight takes its [`WeightShape`]. The AVX2 kernels
//! (`x86::run_avx2`, `x86::rows_avx2`) give the same bits as the AVX-512 ones;
//! `GRAFTLM_NO_AVX512=1` makes an AVX-512 machine use them (CI tests both). The width-generic
//! helpers (`to_panels`, `matvec_panels`, 32-wide 16-bit panels) serve the probe and tests.

use crate::kernels::weight::Weight;

/// Columns per panel of a held weight (16 for every dtype: one layout for all kernels; 32-wide
/// bf16 panels stream barely faster, not enough to carry a second layout).
pub(crate) const PANEL: usize = 16;

/// How a held `[k, n]` weight's values lie in its storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Row-major `[k, n]`.
    Rows,
    /// Panel-major `[⌈n / 16⌉][k][16]`, the last panel padded with zeros ([`to_panels_of`]).
    Panels,
    /// GGML Q8_0 blocks of the transpose: `n` rows of `k / 32` blocks ([`crate::kernels::quant`]).
    Q8_0,
    /// GGML Q4_0 blocks of the transpose, as [`Layout::Q8_0`].
    Q4_0,
}

impl Layout {
    /// Whether the weight is held as blocks (Q8_0, Q4_0).
    pub(crate) fn is_blocks(self) -> bool {
        matches!(self, Layout::Q8_0 | Layout::Q4_0)
    }
}

/// The logical shape of a held weight and its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightShape {
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

    /// Values (blocks, for block layouts) the storage holds.
    pub(crate) fn len(&self) -> usize {
        match self.layout {
            Layout::Rows => self.k * self.n,
            Layout::Panels => self.n.div_ceil(PANEL) * self.k * PANEL,
            Layout::Q8_0 | Layout::Q4_0 => self.n * (self.k / crate::kernels::quant::QK),
        }
    }

    /// Where element `(i, j)` lies; the rest of its row up to the next multiple of 16 columns
    /// follows it in both layouts (a 16-column vector that starts at a multiple of 16 is
    /// contiguous).
    /// (Not defined for block layouts, which no element-wise reader is given.)
    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> usize {
        match self.layout {
            Layout::Rows | Layout::Q8_0 | Layout::Q4_0 => i * self.n + j,
            Layout::Panels => (j / PANEL) * self.k * PANEL + i * PANEL + j % PANEL,
        }
    }

    /// How far apart the same columns of consecutive rows lie.
    #[inline(always)]
    pub(crate) fn row_stride(&self) -> usize {
        match self.layout {
            Layout::Rows | Layout::Q8_0 | Layout::Q4_0 => self.n,
            Layout::Panels => PANEL,
        }
    }
}

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
    let mut out = crate::kernels::buffer::zeroed::<T>(panels * k * PANEL);
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
        crate::kernels::buffer::populate(dst);
        let first = q * PANEL;
        let here = PANEL.min(rows - first);
        if here < PANEL {
            scratch.fill(0.0);
        }
        let src: [&[S]; PANEL] =
            std::array::from_fn(|c| if c < here { row(first + c) } else { &[] });
        // Sixteen rows of `k` at a time: a 16 × 16 block (in L1) per step. One stored row at a
        // time would write every sixteenth value of the whole scratch (`k × 64` bytes: past L2
        // for wide layers), a large share of a big model's load (benches/RESULTS.md).
        for i0 in (0..k).step_by(PANEL) {
            let i1 = (i0 + PANEL).min(k);
            for (c, r) in src.iter().enumerate().take(here) {
                for (i, v) in (i0..i1).zip(&r[i0..i1]) {
                    scratch[i * PANEL + c] = v.to_f32();
                }
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

/// Columns per panel for weights of type `W`: one 64-byte line of a row.
#[cfg(test)]
pub(crate) const fn width<W>() -> usize {
    64 / std::mem::size_of::<W>()
}

/// A row-major `[k, n]` weight in panel-major order (the last panel padded with zeros).
#[cfg(test)]
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
    let mut p = crate::kernels::buffer::zeroed::<W>(n.div_ceil(wd) * k * wd);
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
#[cfg(test)]
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
    let mut w = crate::kernels::buffer::zeroed::<W>(k * n);
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
#[cfg(test)]
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
    let threads = crate::kernels::weight::threads();
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
        if crate::kernels::math::avx512() {
            // SAFETY: the CPU has AVX-512F; the panels read lie in `p` (asserted above).
            unsafe {
                // Sixteen-bit panels eight side by side: a row step then reads as many bytes
                // as f32's four, and 16-bit weights stream faster than with four (measurements:
                // benches/RESULTS.md).
                match (wd / 16, std::mem::size_of::<W>()) {
                    (1, 2) => x86::run_avx512::<W, 1, 8>(x, p, first, out),
                    (1, _) => x86::run_avx512::<W, 1, 4>(x, p, first, out),
                    _ => x86::run_avx512::<W, 2, 4>(x, p, first, out),
                }
            }
            return;
        }
        if wd == PANEL && crate::kernels::math::avx2() {
            // Sixteen-bit panels six side by side (twelve accumulators of AVX2's sixteen
            // registers): faster than four for 16-bit weights; f32 gains nothing past four
            // (measurements: benches/RESULTS.md).
            // SAFETY: the CPU has AVX2, FMA and F16C; the panels read lie in `p` (asserted).
            unsafe {
                if std::mem::size_of::<W>() == 2 {
                    x86::run_avx2::<W, 6>(x, p, first, out)
                } else {
                    x86::run_avx2::<W, 4>(x, p, first, out)
                }
            };
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
/// panel once down all of `k`, every row's outputs in registers. The CPU must have AVX-512F or
/// AVX2 + FMA + F16C.
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
    if n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let wide = crate::kernels::math::avx512();
        assert!(wide || crate::kernels::math::avx2());
        // The rows interleaved (`[k][8]`, zero past `m`): one contiguous read per weight row.
        let xi = interleaved(x, k, 8);
        let panels = n.div_ceil(PANEL);
        let threads = crate::kernels::weight::threads();
        let per = panels.div_ceil(threads);
        let tasks = panels.div_ceil(per);
        let y_addr = y.as_mut_ptr() as usize;
        let run = |t: usize| {
            let (j0, j1) = (t * per * PANEL, ((t + 1) * per * PANEL).min(n));
            // SAFETY: AVX-512F, or AVX2 + FMA + F16C, is present (asserted; `wide` says which);
            // tasks write disjoint column ranges
            // `j0..j1` of `y` (`m × n`, alive for the whole loop); reads stay in `w`
            // (`shape.len()` values, asserted) and `xi` (`k × 8`).
            unsafe {
                let y = y_addr as *mut f32;
                if !wide {
                    // AVX2: one panel at a time, at most six rows per pass over it (a second
                    // pass for rows 7 and 8 finds the panel in L1 / L2).
                    for j in (j0..j1).step_by(PANEL) {
                        match m {
                            1 => x86::rows_avx2::<W, 1>(&xi, w, shape, j, 0, y),
                            2 => x86::rows_avx2::<W, 2>(&xi, w, shape, j, 0, y),
                            3 => x86::rows_avx2::<W, 3>(&xi, w, shape, j, 0, y),
                            4 => x86::rows_avx2::<W, 4>(&xi, w, shape, j, 0, y),
                            5 => x86::rows_avx2::<W, 5>(&xi, w, shape, j, 0, y),
                            6 => x86::rows_avx2::<W, 6>(&xi, w, shape, j, 0, y),
                            7 => {
                                x86::rows_avx2::<W, 4>(&xi, w, shape, j, 0, y);
                                x86::rows_avx2::<W, 3>(&xi, w, shape, j, 4, y);
                            }
                            _ => {
                                x86::rows_avx2::<W, 4>(&xi, w, shape, j, 0, y);
                                x86::rows_avx2::<W, 4>(&xi, w, shape, j, 4, y);
                            }
                        }
                    }
                    return;
                }
                match m {
                    1 => x86::rows_avx512::<W, 1>(&xi, w, shape, j0, j1, y),
                    2 => x86::rows_avx512::<W, 2>(&xi, w, shape, j0, j1, y),
                    3 => x86::rows_avx512::<W, 3>(&xi, w, shape, j0, j1, y),
                    4 => x86::rows_avx512::<W, 4>(&xi, w, shape, j0, j1, y),
                    5 => x86::rows_avx512::<W, 5>(&xi, w, shape, j0, j1, y),
                    6 => x86::rows_avx512::<W, 6>(&xi, w, shape, j0, j1, y),
                    7 => x86::rows_avx512::<W, 7>(&xi, w, shape, j0, j1, y),
                    _ => x86::rows_avx512::<W, 8>(&xi, w, shape, j0, j1, y),
                }
            }
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
    panic!("panel-major weights need AVX-512F or AVX2");
}

/// The rows of `x` (`[m, k]`, `k > 0`) in blocks of `mr`, each block interleaved (`[k][mr]`:
/// value `i` of the block's rows side by side), zero rows past `m`.
pub(crate) fn interleaved(x: &[f32], k: usize, mr: usize) -> Vec<f32> {
    let blocks = (x.len() / k).div_ceil(mr);
    let mut xp = vec![0f32; blocks * mr * k];
    for (b, dst) in xp.chunks_exact_mut(mr * k).enumerate() {
        for (r, row) in x.chunks_exact(k).skip(b * mr).take(mr).enumerate() {
            for (d, &v) in dst.iter_mut().skip(r).step_by(mr).zip(row) {
                *d = v;
            }
        }
    }
    xp
}

mod side;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use side::Side;
pub(crate) use side::{in_pass, panel_run_side};

#[cfg(test)]
mod tests;
