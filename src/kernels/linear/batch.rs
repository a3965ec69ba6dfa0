//! `Y = X·W` for a few rows — one decoding step of a batch of sequences. The prefill GEMM
//! ([`crate::kernels::linear::prefill`]) walks 48-column panels down all of `k`, which for a
//! handful of rows touches a new page every weight row and reuses nothing; this kernel streams
//! the weight the way the one-row kernel does (column tiles, eight weight rows per pass) and
//! applies each loaded weight vector to every row.
//!
//! Weights held as panels ([`crate::kernels::panels`]) take `panels::rows_panels` instead: each
//! panel is walked once down all of `k` with every row's outputs in registers.
//!
//! Each output is the same in-order fused multiply-add chain as
//! [`crate::kernels::linear::tiles`]'s, so a row computed here is bit-identical to the same row
//! decoded alone.

use crate::kernels::panels::{Layout, WeightShape};
use crate::kernels::weight::Weight;

/// At most this many rows (beyond it the GEMM's register blocking pays).
pub const MAX_ROWS: usize = 8;
/// Output columns per task at most: `MAX_ROWS` rows of it stay in L1 (32 KB).
const TILE: usize = 1024;

/// `y = x·w` with `x` `[m, k]`, `w` `[k, n]`, `y` `[m, n]`, all row-major, `m ≤ MAX_ROWS`.
/// Returns `false` (leaving `y` alone) without AVX-512F or AVX2 + FMA + F16C, so the caller can
/// fall back.
#[cfg(test)]
pub fn matmul<W: Weight>(x: &[f32], w: &[W], y: &mut [f32], m: usize, k: usize, n: usize) -> bool {
    matmul_in(x, w, WeightShape::rows([k, n]), y, m)
}

/// [`matmul`] with `w` held as `shape` says (row-major or panels).
pub(crate) fn matmul_in<W: Weight>(
    x: &[f32],
    w: &[W],
    shape: WeightShape,
    y: &mut [f32],
    m: usize,
) -> bool {
    let (k, n) = (shape.k, shape.n);
    assert!(m <= MAX_ROWS && x.len() == m * k && w.len() == shape.len() && y.len() == m * n);
    #[cfg(target_arch = "x86_64")]
    {
        if shape.layout == Layout::Panels {
            crate::kernels::panels::rows_panels(x, m, w, shape, y);
            return true;
        }
        if !crate::kernels::math::avx512() {
            // AVX2 on row-major weights (tests; the model holds panels there): the GEMM.
            return crate::kernels::linear::prefill::gemm_in(x, w, shape, y, m);
        }
        let threads = crate::kernels::weight::threads();
        let tile = n
            .div_ceil(threads)
            .div_ceil(16)
            .saturating_mul(16)
            .clamp(16, TILE);
        let tiles = n.div_ceil(tile);
        let run = |t: usize| -> (usize, Vec<f32>) {
            let j0 = t * tile;
            let width = tile.min(n - j0);
            let mut out = vec![0f32; m * width];
            // SAFETY: AVX-512F is present; `x`, `w` have the asserted sizes, `out` is
            // `m × width` and `j0 + width <= n`.
            unsafe { x86::tile(x, m, k, w, n, j0, width, &mut out) };
            (j0, out)
        };
        #[cfg(feature = "flex")]
        let parts: Vec<(usize, Vec<f32>)> = {
            use rayon::prelude::*;
            (0..tiles).into_par_iter().map(run).collect()
        };
        #[cfg(not(feature = "flex"))]
        let parts: Vec<(usize, Vec<f32>)> = (0..tiles).map(run).collect();
        for (j0, out) in parts {
            let width = out.len() / m.max(1);
            for (r, o) in out.chunks(width).enumerate() {
                y[r * n + j0..r * n + j0 + width].copy_from_slice(o);
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, y, m, k, n);
        false
    }
}

/// `y = x·w` on the calling thread, `x` `[m, k]` (`m ≤ MAX_ROWS`), `w` row-major `[k, n]`, `y`
/// `[m, n]` overwritten, `w` read once for all `m` rows; each row bit for bit what
/// [`crate::kernels::linear::tiles::matvec_serial`] gives it alone. Returns `false` (nothing
/// written) without AVX-512F, so the caller can go row by row.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn rows_serial<W: Weight>(x: &[f32], m: usize, w: &[W], y: &mut [f32]) -> bool {
    if m == 0 || y.is_empty() {
        return true;
    }
    assert!(m <= MAX_ROWS && y.len().is_multiple_of(m));
    let n = y.len() / m; // ≥ 1: `y` is not empty
    let k = w.len() / n;
    assert!(x.len() == m * k && w.len() == k * n);
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::math::avx512() {
        y.fill(0.0);
        // SAFETY: AVX-512F is present; the sizes are asserted above (`j0 + width = n`).
        unsafe { x86::tile(x, m, k, w, n, 0, n, y) };
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Weight;
    use std::arch::x86_64::*;

    /// Columns `j0..j0 + width` of all `m` rows into `out` (`[m, width]`).
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn tile<W: Weight>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        n: usize,
        j0: usize,
        width: usize,
        out: &mut [f32],
    ) {
        let full = width / 16 * 16;
        let o = out.as_mut_ptr();
        let xp = x.as_ptr();
        let mut i = 0;
        // Eight weight rows per pass, as the one-row kernel: each output gets the same eight
        // fused multiply-adds in the same order.
        while i + 8 <= k {
            let p: [*const W; 8] = std::array::from_fn(|q| w.as_ptr().add((i + q) * n + j0));
            let ahead = i + 16 <= k;
            let mut j = 0;
            while j < full {
                // The next pass's rows: a weight row lies a whole row (often pages) away from
                // the one before, which the hardware prefetchers do not follow. Into L2, as in
                // the one-row kernel (into L1 is slower here too: benches/RESULTS.md).
                if ahead && (j * std::mem::size_of::<W>()).is_multiple_of(64) {
                    for pq in &p {
                        _mm_prefetch::<_MM_HINT_T1>(pq.add(8 * n + j) as *const i8);
                    }
                }
                let wv: [__m512; 8] = std::array::from_fn(|q| W::load16(p[q].add(j)));
                for r in 0..m {
                    let op = o.add(r * width + j);
                    let xr = xp.add(r * k + i);
                    let mut acc = _mm512_loadu_ps(op);
                    for (q, wq) in wv.iter().enumerate() {
                        acc = _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(q)), *wq, acc);
                    }
                    _mm512_storeu_ps(op, acc);
                }
                j += 16;
            }
            i += 8;
        }
        while i < k {
            let p = w.as_ptr().add(i * n + j0);
            let mut j = 0;
            while j < full {
                let wv = W::load16(p.add(j));
                for r in 0..m {
                    let op = o.add(r * width + j);
                    let acc = _mm512_fmadd_ps(
                        _mm512_set1_ps(*xp.add(r * k + i)),
                        wv,
                        _mm512_loadu_ps(op),
                    );
                    _mm512_storeu_ps(op, acc);
                }
                j += 16;
            }
            i += 1;
        }
        // Columns past the last full vector: scalar, the same order.
        for i in 0..k {
            let base = i * n + j0;
            for j in full..width {
                let wij = w.get_unchecked(base + j).to_f32();
                for r in 0..m {
                    let oj = out.get_unchecked_mut(r * width + j);
                    *oj = x.get_unchecked(r * k + i).mul_add(wij, *oj);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-0.5, 0.5) from a linear congruential sequence.
    fn rnd(s: &mut u32) -> f32 {
        *s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (*s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }

    #[test]
    fn rows_equal_the_decode_kernel_bit_for_bit() {
        let mut s = 17u32;
        for (m, k, n) in [
            (1, 1, 1),
            (2, 3, 5),
            (3, 9, 17),
            (8, 300, 49),
            (5, 576, 2100),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd(&mut s)).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rnd(&mut s)).collect();
            let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let mut y = vec![f32::NAN; m * n];
            if !matmul(&x, &w, &mut y, m, k, n) {
                return; // no AVX-512 here: callers fall back
            }
            let mut yb = vec![f32::NAN; m * n];
            assert!(matmul(&x, &bf, &mut yb, m, k, n));
            for r in 0..m {
                let mut want = vec![0f32; n];
                crate::kernels::linear::tiles::matvec(&x[r * k..(r + 1) * k], &w, &mut want);
                assert_eq!(
                    &y[r * n..(r + 1) * n],
                    &want[..],
                    "m={m} k={k} n={n} row {r}"
                );
                crate::kernels::linear::tiles::matvec(&x[r * k..(r + 1) * k], &bf, &mut want);
                assert_eq!(
                    &yb[r * n..(r + 1) * n],
                    &want[..],
                    "bf16 m={m} k={k} n={n} row {r}"
                );
            }
        }
    }

    /// The calling-thread variant (merges: `A·B` eight rows at a time) gives each row what the
    /// serial matrix–vector kernel gives it, whatever was in `y` before.
    #[test]
    fn serial_rows_equal_the_serial_kernel_bit_for_bit() {
        let mut s = 5u32;
        for (m, k, n) in [
            (1, 1, 1),
            (8, 16, 70),
            (3, 48, 960),
            (8, 7, 33),
            (6, 16, 1536),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd(&mut s)).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rnd(&mut s)).collect();
            let mut y = vec![f32::NAN; m * n];
            if !rows_serial(&x, m, &w, &mut y) {
                return; // no AVX-512 here: callers go row by row
            }
            for r in 0..m {
                let mut want = vec![f32::NAN; n];
                crate::kernels::linear::tiles::matvec_serial(&x[r * k..(r + 1) * k], &w, &mut want);
                assert_eq!(
                    &y[r * n..(r + 1) * n],
                    &want[..],
                    "m={m} k={k} n={n} row {r}"
                );
            }
        }
    }
}
