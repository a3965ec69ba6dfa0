//! `Y = X·Wᵀ` for several activation rows over a weight held as rows of blocks: a few rows
//! (batched decoding) as the row dot per (weight row, activation row), each weight row read
//! once while it sits in L1; many rows (prefill) by dequantizing a band of weight rows at a
//! time into the f32 GEMM's row-major layout and running that GEMM
//! ([`crate::kernels::linear::prefill`]).
//!
//! A row computed by [`few`] is bit-identical to the same row decoded alone. [`prefill`]'s
//! rows are the f32 GEMM of the dequantized weights (`d·q` is exact in f32), so they differ
//! from decoding only by summation order.

use super::dot::{rows_with, DotBlock};
use super::QK;

/// Weight rows per band of [`prefill`]: a whole number of the GEMM's 48-column panels; the band
/// (`k × BAND` f32, 1.7 MB for `k` = 576) is dequantized once per call and read by every row.
const BAND: usize = 768;

/// `y[i, r] = x[i]·w[r]` for `m` activation rows `x` (`[m, k·QK]`) and the `n` weight rows of
/// `k` blocks in `w`; `y` is `[m, n]`. Weight rows are split across rayon's threads.
///
/// # Panics
/// When the sizes do not match.
pub fn few<B: DotBlock>(x: &[f32], m: usize, w: &[B], n: usize, y: &mut [f32]) {
    use rayon::prelude::*;
    let k = blocks_per_row(x.len(), m, w.len(), n, y.len());
    if m == 0 || n == 0 {
        return;
    }
    // Each task takes a run of weight rows and writes their columns of every output row.
    let threads = crate::kernels::weight::threads();
    let rows = n.div_ceil(threads * 4).max(8);
    let cols: Vec<Vec<f32>> = (0..n.div_ceil(rows))
        .into_par_iter()
        .map(|t| {
            let (r0, r1) = (t * rows, ((t + 1) * rows).min(n));
            let mut out = vec![0f32; m * (r1 - r0)];
            for (i, o) in out.chunks_exact_mut(r1 - r0).enumerate() {
                rows_with(&w[r0 * k..r1 * k], k, &x[i * k * QK..(i + 1) * k * QK], o);
            }
            out
        })
        .collect();
    for (t, out) in cols.iter().enumerate() {
        let (r0, width) = (t * rows, out.len() / m);
        for (i, o) in out.chunks_exact(width).enumerate() {
            y[i * n + r0..i * n + r0 + width].copy_from_slice(o);
        }
    }
}

/// [`few`] for many activation rows: each band of weight rows dequantized (in parallel, a
/// 16-row panel per task) into the f32 GEMM's panel layout and multiplied by that GEMM. `false`
/// (and `y` untouched) where this CPU has no GEMM kernel (neither AVX-512F nor AVX2 + FMA +
/// F16C): the caller then uses its own.
///
/// # Panics
/// When the sizes do not match.
pub fn prefill<B: DotBlock>(x: &[f32], m: usize, w: &[B], n: usize, y: &mut [f32]) -> bool {
    use crate::kernels::linear::prefill::gemm_in;
    use crate::kernels::panels::{Layout, WeightShape, PANEL};
    use rayon::prelude::*;
    let k = blocks_per_row(x.len(), m, w.len(), n, y.len());
    let kk = k * QK;
    let widest = BAND.min(n);
    let mut band = vec![0f32; widest.div_ceil(PANEL) * kk * PANEL];
    let mut out = vec![0f32; m * widest];
    for r0 in (0..n).step_by(BAND) {
        let width = BAND.min(n - r0);
        let shape = WeightShape {
            k: kk,
            n: width,
            layout: Layout::Panels,
        };
        let band = &mut band[..shape.len()];
        // Panel `p` holds weight rows `r0 + 16p ..` as its columns; rows past the end are zeros.
        band.par_chunks_mut(kk * PANEL)
            .enumerate()
            .for_each(|(p, panel)| {
                let mut vals = [0f32; QK];
                for c in 0..PANEL {
                    let r = r0 + p * PANEL + c;
                    for b in 0..k {
                        if r < r0 + width {
                            w[r * k + b].dequantize(&mut vals);
                        } else {
                            vals = [0.0; QK];
                        }
                        for (j, v) in vals.iter().enumerate() {
                            panel[(b * QK + j) * PANEL + c] = *v;
                        }
                    }
                }
            });
        let out = &mut out[..m * width];
        if !gemm_in(x, band, shape, out, m) {
            return false;
        }
        for (i, o) in out.chunks_exact(width).enumerate() {
            y[i * n + r0..i * n + r0 + width].copy_from_slice(o);
        }
    }
    true
}

/// Blocks per weight row for `m` activation rows (`x_len` values), `n` weight rows (`w_len`
/// blocks) and `y_len` outputs.
///
/// # Panics
/// When the sizes do not match.
fn blocks_per_row(x_len: usize, m: usize, w_len: usize, n: usize, y_len: usize) -> usize {
    let k = w_len.checked_div(n).unwrap_or(0);
    assert!(
        w_len == n * k && x_len == m * k * QK && y_len == m * n,
        "sizes: x {x_len} for {m} rows, w {w_len} for {n} rows, y {y_len}"
    );
    k
}
