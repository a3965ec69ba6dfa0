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

/// Weight rows per band of [`prefill`]: a whole number of the GEMM's 48-column panels, small
/// enough that the band (`k × BAND` f32) stays in L2 for typical widths.
const BAND: usize = 192;

/// `y[i, r] = x[i]·w[r]` for `m` activation rows `x` (`[m, k·QK]`) and the `n` weight rows of
/// `k` blocks in `w`; `y` is `[m, n]`. Weight rows are split across rayon's threads.
///
/// # Panics
/// When the sizes do not match.
pub fn few<B: DotBlock>(x: &[f32], m: usize, w: &[B], n: usize, y: &mut [f32]) {
    use rayon::prelude::*;
    let k = w.len().checked_div(n).unwrap_or(0);
    assert!(
        w.len() == n * k && x.len() == m * k * QK && y.len() == m * n,
        "sizes: x {} for {m} rows, w {} for {n} rows, y {}",
        x.len(),
        w.len(),
        y.len()
    );
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

/// [`few`] for many activation rows: each band of weight rows dequantized into a `[k·QK, band]`
/// f32 matrix and multiplied by the GEMM. `false` (and `y` untouched) where this CPU has no
/// GEMM kernel (neither AVX-512F nor AVX2 + FMA + F16C): the caller then uses its own.
///
/// # Panics
/// When the sizes do not match.
pub fn prefill<B: DotBlock>(x: &[f32], m: usize, w: &[B], n: usize, y: &mut [f32]) -> bool {
    use crate::kernels::linear::prefill::gemm_in;
    use crate::kernels::panels::WeightShape;
    let k = w.len().checked_div(n).unwrap_or(0);
    assert!(
        w.len() == n * k && x.len() == m * k * QK && y.len() == m * n,
        "sizes: x {} for {m} rows, w {} for {n} rows, y {}",
        x.len(),
        w.len(),
        y.len()
    );
    let kk = k * QK;
    let mut band = vec![0f32; kk * BAND.min(n)];
    let mut out = vec![0f32; m * BAND.min(n)];
    let mut vals = [0f32; QK];
    for r0 in (0..n).step_by(BAND) {
        let width = BAND.min(n - r0);
        let band = &mut band[..kk * width];
        // Row `r` of the band's weights is column `r` of the `[kk, width]` matrix.
        for r in 0..width {
            for (b, blk) in w[(r0 + r) * k..(r0 + r + 1) * k].iter().enumerate() {
                blk.dequantize(&mut vals);
                for (j, v) in vals.iter().enumerate() {
                    band[(b * QK + j) * width + r] = *v;
                }
            }
        }
        let out = &mut out[..m * width];
        if !gemm_in(x, band, WeightShape::rows([kk, width]), out, m) {
            return false;
        }
        for (i, o) in out.chunks_exact(width).enumerate() {
            y[i * n + r0..i * n + r0 + width].copy_from_slice(o);
        }
    }
    true
}
