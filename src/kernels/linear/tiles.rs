//! Column tiles of `x·W` for one row: the matrix–vector kernels every other linear kernel builds
//! on. Decoding multiplies one activation row by every weight matrix, so its speed is set by how
//! fast the weights stream from memory: the weight is read in place (`[k, n]` row-major, or
//! 16-column panels, [`crate::kernels::panels`]) and the output columns are split across
//! threads.
//!
//! Each output is summed over `k` in the same order whatever the thread count, so results do not
//! depend on the machine; they differ from the GEMM path only by rounding.

use crate::kernels::panels::PANEL;
use crate::kernels::weight::{Held, Weight};

/// Output columns per task at most: the output tile stays in L1 while the weight rows stream past.
pub(crate) const TILE: usize = 4096;
/// Tasks are whole vectors wide (16 f32 lanes) so every task runs the vector loop to the end.
const LANES: usize = 16;

/// `y = x·W` with `W` `[x.len(), y.len()]` row-major, columns split across rayon's threads.
pub fn matvec<W: Weight>(x: &[f32], w: &[W], y: &mut [f32]) {
    let n = y.len();
    debug_assert_eq!(w.len(), x.len() * n);
    split_columns(y, |j0, out| tile_kernel(x, w, n, j0, out));
}

/// [`matvec`] on the calling thread alone (callers that already run in parallel).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn matvec_serial<W: Weight>(x: &[f32], w: &[W], y: &mut [f32]) {
    let n = y.len();
    tile_kernel(x, w, n, 0, y);
}

/// Column-tile width for `n` outputs over `threads`: at least one task per thread (even for
/// small outputs: in a real decode the weights come from memory, not cache, and one core cannot
/// saturate the memory bus), whole vectors wide, at most [`TILE`].
pub(crate) fn column_tile(n: usize, threads: usize) -> usize {
    let per_thread = n.div_ceil(threads.max(1)).div_ceil(LANES) * LANES;
    per_thread.clamp(LANES, TILE)
}

/// Runs `f(j0, width)` over the column tiles [`split_columns`] would use for `n` columns.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn for_tiles(n: usize, f: impl Fn(usize, usize) + Sync + Send) {
    let threads = crate::kernels::weight::threads();
    let tile = column_tile(n, threads);
    let tiles = n.div_ceil(tile);
    let run = |t: usize| f(t * tile, tile.min(n - t * tile));
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if threads > 1 && tiles > 1 {
            (0..tiles).into_par_iter().for_each(run);
            return;
        }
    }
    (0..tiles).for_each(run);
}

/// Runs `f(j0, tile)` over column tiles of `y` (at most [`TILE`] wide), in parallel on rayon's
/// threads when there is more than one tile.
fn split_columns(y: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    let n = y.len();
    let threads = crate::kernels::weight::threads();
    let tile = column_tile(n, threads);
    let run = |(t, out): (usize, &mut [f32])| f(t * tile, out);
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if threads > 1 && n > tile {
            y.par_chunks_mut(tile).enumerate().for_each(run);
            return;
        }
    }
    y.chunks_mut(tile).enumerate().for_each(run);
}

/// Output columns `j0..j0 + out.len()`: `out[j] = Σ_i x[i]·W[i, j0 + j]`, accumulated with fused
/// multiply-adds in row order (the same arithmetic on every path, so the result does not depend on
/// which instruction set the CPU has).
fn tile_kernel<W: Weight>(x: &[f32], w: &[W], n: usize, j0: usize, out: &mut [f32]) {
    assert!(j0 + out.len() <= n && w.len() >= x.len() * n);
    out.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::math::avx512() {
            let mut from = 0;
            if std::any::TypeId::of::<W>() == std::any::TypeId::of::<half::bf16>() {
                // SAFETY: `W` is bf16, so this is the same slice; the CPU has AVX-512F; indices
                // are in bounds (asserted above); `out` holds zeros.
                from = unsafe {
                    let w = std::slice::from_raw_parts(w.as_ptr() as *const half::bf16, w.len());
                    crate::kernels::linear::tiles_bf16::tile_avx512_bf16(x, w, n, j0, out)
                };
            }
            // SAFETY: the CPU has AVX-512F; indices are in bounds (asserted above).
            return unsafe { x86::tile_avx512(x, w, n, j0 + from, &mut out[from..]) };
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the CPU has AVX2, FMA and F16C; indices are in bounds (asserted above).
            return unsafe { x86::tile_avx2(x, w, n, j0, out) };
        }
    }
    for (i, &xi) in x.iter().enumerate() {
        let row = &w[i * n + j0..i * n + j0 + out.len()];
        for (o, &r) in out.iter_mut().zip(row) {
            *o = xi.mul_add(r.to_f32(), *o);
        }
    }
}

/// [`tile_kernel`] over a weight of any held element type.
pub(crate) fn tile(x: &[f32], w: &Held<'_>, n: usize, j0: usize, out: &mut [f32]) {
    match *w {
        Held::F32(w) => tile_kernel(x, w, n, j0, out),
        Held::Bf16(w) => tile_kernel(x, w, n, j0, out),
        Held::F16(w) => tile_kernel(x, w, n, j0, out),
        // (Block-held weights go to `kernels::quant` from `linear::rows`; terms are never
        // blocks, `Operands` checks both.)
        Held::Q8_0(_) | Held::Q4_0(_) => out.fill(f32::NAN),
    }
}

/// Output columns `j0..j0 + out.len()` (`j0` a multiple of 16) of a weight held as panels.
pub(crate) fn panel_tile(x: &[f32], w: &Held<'_>, j0: usize, out: &mut [f32]) {
    use crate::kernels::panels::panel_run_of;
    match *w {
        Held::F32(w) => panel_run_of(x, w, j0 / PANEL, out, PANEL),
        Held::Bf16(w) => panel_run_of(x, w, j0 / PANEL, out, PANEL),
        Held::F16(w) => panel_run_of(x, w, j0 / PANEL, out, PANEL),
        // (`Operands` never pairs blocks with the panel layout.)
        Held::Q8_0(_) | Held::Q4_0(_) => out.fill(f32::NAN),
    }
}

/// [`panel_tile`] with `x·A` for columns `c..c + xa.len()` of a low-rank term's `A` (`[k, r]`,
/// held in any dtype) summed in the same pass and handed to `ready` as soon as it is done
/// ([`crate::kernels::panels::panel_run_side`]); `false`, nothing written, where the kernels
/// cannot.
pub(crate) fn panel_tile_side(
    x: &[f32],
    w: &Held<'_>,
    j0: usize,
    out: &mut [f32],
    (a, r, c): (&Held<'_>, usize, usize),
    xa: &mut [f32],
    ready: &mut dyn FnMut(&[f32]),
) -> bool {
    use crate::kernels::panels::{panel_run_side, Side};
    type Run<'x, W> = (&'x [f32], &'x [W], usize, &'x mut [f32]);
    fn go<W: Weight, S: Weight>(
        (x, w, first, out): Run<'_, W>,
        a: Option<&[S]>,
        stride: usize,
        xa: &mut [f32],
        ready: &mut dyn FnMut(&[f32]),
    ) -> bool {
        let Some(a) = a else { return false };
        let width = xa.len();
        let side = Side {
            a,
            stride,
            width,
            xa,
        };
        panel_run_side(x, w, first, out, side, ready)
    }
    fn with<W: Weight>(
        run: Run<'_, W>,
        (a, r, c): (&Held<'_>, usize, usize),
        xa: &mut [f32],
        ready: &mut dyn FnMut(&[f32]),
    ) -> bool {
        match *a {
            Held::F32(a) => go(run, a.get(c..), r, xa, ready),
            Held::Bf16(a) => go(run, a.get(c..), r, xa, ready),
            Held::F16(a) => go(run, a.get(c..), r, xa, ready),
            Held::Q8_0(_) | Held::Q4_0(_) => false,
        }
    }
    let first = j0 / PANEL;
    match *w {
        Held::F32(w) => with((x, w, first, out), (a, r, c), xa, ready),
        Held::Bf16(w) => with((x, w, first, out), (a, r, c), xa, ready),
        Held::F16(w) => with((x, w, first, out), (a, r, c), xa, ready),
        Held::Q8_0(_) | Held::Q4_0(_) => false,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Weight;
    use std::arch::x86_64::*;

    /// Scalar columns past the last full vector, same arithmetic as the vector lanes.
    #[inline(always)]
    unsafe fn tail<W: Weight>(
        x: &[f32],
        w: &[W],
        n: usize,
        j0: usize,
        out: &mut [f32],
        from: usize,
    ) {
        for (i, &xi) in x.iter().enumerate() {
            let base = i * n + j0;
            for j in from..out.len() {
                let o = out.get_unchecked_mut(j);
                *o = xi.mul_add(w.get_unchecked(base + j).to_f32(), *o);
            }
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(crate) unsafe fn tile_avx512<W: Weight>(
        x: &[f32],
        w: &[W],
        n: usize,
        j0: usize,
        out: &mut [f32],
    ) {
        let full = out.len() / 16 * 16;
        let o = out.as_mut_ptr();
        let mut i = 0;
        // Eight weight rows per pass over the output tile: eight input streams, one read-modify-
        // write of the (L1-resident) tile.
        while i + 8 <= x.len() {
            let p: [*const W; 8] = std::array::from_fn(|r| w.as_ptr().add((i + r) * n + j0));
            let xs: [__m512; 8] = std::array::from_fn(|r| _mm512_set1_ps(x[i + r]));
            let ahead = i + 16 <= x.len();
            let mut j = 0;
            while j < full {
                // The next pass's rows lie a whole weight row (often pages) apart, which the
                // hardware prefetchers do not follow: one prefetch per cache line ahead. Into L2
                // (T1), not L1: prefetches into L1 hold its few miss buffers and cap the stream
                // on the CPUs measured (benches/RESULTS.md).
                if ahead && (j * std::mem::size_of::<W>()).is_multiple_of(64) {
                    for pr in &p {
                        _mm_prefetch::<_MM_HINT_T1>(pr.add(8 * n + j) as *const i8);
                    }
                }
                let mut acc = _mm512_loadu_ps(o.add(j));
                for r in 0..8 {
                    acc = _mm512_fmadd_ps(xs[r], W::load16(p[r].add(j)), acc);
                }
                _mm512_storeu_ps(o.add(j), acc);
                j += 16;
            }
            i += 8;
        }
        while i < x.len() {
            let p = w.as_ptr().add(i * n + j0);
            let xi = _mm512_set1_ps(x[i]);
            let mut j = 0;
            while j < full {
                let acc = _mm512_fmadd_ps(xi, W::load16(p.add(j)), _mm512_loadu_ps(o.add(j)));
                _mm512_storeu_ps(o.add(j), acc);
                j += 16;
            }
            i += 1;
        }
        tail(x, w, n, j0, out, full);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn tile_avx2<W: Weight>(
        x: &[f32],
        w: &[W],
        n: usize,
        j0: usize,
        out: &mut [f32],
    ) {
        let full = out.len() / 8 * 8;
        let o = out.as_mut_ptr();
        let mut i = 0;
        while i + 4 <= x.len() {
            let p = w.as_ptr().add(i * n + j0);
            let (p1, p2, p3) = (p.add(n), p.add(2 * n), p.add(3 * n));
            let (x0, x1) = (_mm256_set1_ps(x[i]), _mm256_set1_ps(x[i + 1]));
            let (x2, x3) = (_mm256_set1_ps(x[i + 2]), _mm256_set1_ps(x[i + 3]));
            let mut j = 0;
            while j < full {
                let mut acc = _mm256_loadu_ps(o.add(j));
                acc = _mm256_fmadd_ps(x0, W::load8(p.add(j)), acc);
                acc = _mm256_fmadd_ps(x1, W::load8(p1.add(j)), acc);
                acc = _mm256_fmadd_ps(x2, W::load8(p2.add(j)), acc);
                acc = _mm256_fmadd_ps(x3, W::load8(p3.add(j)), acc);
                _mm256_storeu_ps(o.add(j), acc);
                j += 8;
            }
            i += 4;
        }
        while i < x.len() {
            let p = w.as_ptr().add(i * n + j0);
            let xi = _mm256_set1_ps(x[i]);
            let mut j = 0;
            while j < full {
                let acc = _mm256_fmadd_ps(xi, W::load8(p.add(j)), _mm256_loadu_ps(o.add(j)));
                _mm256_storeu_ps(o.add(j), acc);
                j += 8;
            }
            i += 1;
        }
        tail(x, w, n, j0, out, full);
    }
}

#[cfg(test)]
mod tests;
