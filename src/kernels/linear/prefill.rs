//! `Y = X·W` for several rows (prefill), `W` `[k, n]` read in place (row-major, or 16-column
//! panels: a 48-column panel of the kernel is then three stored ones) — the many-row
//! sibling of [`crate::kernels::linear::tiles`]. burn-flex's general GEMM repacks both operands
//! on every call; here a register-blocked AVX-512 kernel (8 rows × 48 columns of accumulators)
//! streams 48-column panels of `W` straight from the weight, with column panels split over
//! rayon's threads. CPUs with AVX2 but not AVX-512 take [`avx2`]'s 6 × 16 kernel the same way.
//!
//! Every output is one fused multiply-add chain over `k` in order, starting from zero — the same
//! arithmetic as `matvec`'s kernel — so a row computed here is bit-identical to the same row
//! computed alone during decoding, and nothing depends on the thread count.

use crate::kernels::panels::WeightShape;
use crate::kernels::weight::Weight;

/// Rows per register block.
const MR: usize = 8;
/// Vectors (of 16 f32) per register block: 48 columns.
const NV: usize = 3;
/// Columns per panel.
const NR: usize = NV * 16;
/// `k` per pass over a panel: the panel's slice of `W` (`KC × 48` floats) stays in L1/L2 while
/// every row block of the input streams past it.
const KC: usize = 128;
/// How many weight rows ahead the kernel prefetches.
const PREFETCH: usize = 32;

/// `y = x·w` with `x` `[m, k]`, `w` `[k, n]`, `y` `[m, n]`, all row-major. Returns `false` (and
/// leaves `y` alone) when this CPU has neither AVX-512F nor AVX2 + FMA + F16C, so the caller can
/// fall back to its own GEMM.
#[cfg(test)]
pub fn gemm<W: Weight>(x: &[f32], w: &[W], y: &mut [f32], m: usize, k: usize, n: usize) -> bool {
    gemm_in(x, w, WeightShape::rows([k, n]), y, m)
}

/// [`gemm`] with `w` held as `shape` says (row-major or panels: a 48-column panel of the kernel
/// is three stored panels).
pub(crate) fn gemm_in<W: Weight>(
    x: &[f32],
    w: &[W],
    shape: WeightShape,
    y: &mut [f32],
    m: usize,
) -> bool {
    let (k, n) = (shape.k, shape.n);
    assert!(x.len() == m * k && w.len() == shape.len() && y.len() == m * n);
    if k == 0 {
        y.fill(0.0); // an empty sum (the kernels below interleave rows `k` values at a time)
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if !crate::kernels::math::avx512() {
            if crate::kernels::math::avx2() {
                // SAFETY: the CPU has AVX2, FMA and F16C; sizes are as asserted above.
                unsafe { avx2::gemm(x, w, shape, y, m) };
                return true;
            }
            return false;
        }
        // The kernel's eight broadcasts per step then read one contiguous 32-byte run.
        let xp = &crate::kernels::panels::interleaved(x, k, MR)[..];
        let y_addr = y.as_mut_ptr() as usize;
        column_tasks(n, NR, |j0, j1| {
            // SAFETY: AVX-512F is present; tasks write disjoint column ranges `j0..j1` of `y`
            // (which outlives the parallel loop), and every index stays inside the asserted sizes.
            unsafe { x86::columns(xp, w, shape, y_addr as *mut f32, m, j0, j1) };
        });
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, y, m, k, n);
        false
    }
}

/// Runs `f(j0, j1)` over column ranges of `n` columns, whole `nr`-column blocks each (about four
/// per thread, so that a slow thread does not hold up the rest), in parallel on rayon's threads.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn column_tasks(n: usize, nr: usize, f: impl Fn(usize, usize) + Sync + Send) {
    let panels = n.div_ceil(nr);
    let threads = crate::kernels::weight::threads();
    let per_task = panels.div_ceil(threads * 4).max(1);
    let tasks = panels.div_ceil(per_task);
    let run = |t: usize| f(t * per_task * nr, ((t + 1) * per_task * nr).min(n));
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if tasks > 1 && threads > 1 {
            (0..tasks).into_par_iter().for_each(run);
            return;
        }
    }
    (0..tasks).for_each(run);
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Weight, WeightShape, KC, MR, NR, NV, PREFETCH};
    use std::arch::x86_64::*;

    /// Output columns `j0..j1` of every row.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn columns<W: Weight>(
        x: &[f32],
        w: &[W],
        shape: WeightShape,
        y: *mut f32,
        m: usize,
        j0: usize,
        j1: usize,
    ) {
        let (k, n) = (shape.k, shape.n);
        // One panel's `KC × 48` slice of `W`, widened and contiguous: it stays in L1 while every
        // row block streams past it (in place, its rows lie a weight row apart and alias the same
        // few cache sets).
        let mut pack = vec![0f32; KC * NR];
        let mut j = j0;
        while j < j1 {
            let width = (j1 - j).min(NR);
            let lefts: [usize; NV] = std::array::from_fn(|v| width.saturating_sub(v * 16).min(16));
            let masks: [__mmask16; NV] = lefts.map(|left| ((1u32 << left) - 1) as __mmask16);
            let mut k0 = 0;
            while k0 < k {
                let kc = (k - k0).min(KC);
                pack_panel(w, &mut pack, shape, j, k0, kc, &masks, &lefts);
                let mut i = 0;
                while i < m {
                    let xb = &x[i * k..(i + MR) * k];
                    block(xb, &pack, y, (m - i).min(MR), n, i, j, k0, kc, &masks);
                    i += MR;
                }
                k0 += kc;
            }
            j += width;
        }
    }

    /// Rows `k0..k0 + kc`, columns `j..j + 48` of `w` into `pack` (`kc × 48`, zero past the
    /// panel's width).
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pack_panel<W: Weight>(
        w: &[W],
        pack: &mut [f32],
        shape: WeightShape,
        j: usize,
        k0: usize,
        kc: usize,
        masks: &[__mmask16; NV],
        lefts: &[usize; NV],
    ) {
        debug_assert!(pack.len() >= kc * NR);
        let full = lefts.iter().all(|&l| l == 16);
        // Each 16-column vector's place in row `k0` (a vector past the panel's width reuses the
        // first and is never read); rows lie `stride` apart (a whole weight row row-major, 16
        // values in panels).
        let stride = shape.row_stride();
        let mut wp: [*const W; NV] = std::array::from_fn(|v| {
            let c = if lefts[v] > 0 { j + v * 16 } else { j };
            w.as_ptr().add(shape.at(k0, c))
        });
        let dst = pack.as_mut_ptr();
        for kk in 0..kc {
            // Row-major, the panel's rows lie a whole weight row apart (more than a page for most
            // layers), which the hardware prefetchers do not follow: ask for the rows a few steps
            // ahead (stored panels stream on their own; the hint costs little).
            if kk + PREFETCH < kc {
                for p in &wp {
                    _mm_prefetch::<_MM_HINT_T0>(p.add(PREFETCH * stride) as *const i8);
                }
            }
            for v in 0..NV {
                let wv = if full {
                    W::load16(wp[v])
                } else {
                    match lefts[v] {
                        0 => _mm512_setzero_ps(),
                        16 => W::load16(wp[v]),
                        l => W::load16_part(wp[v], masks[v], l),
                    }
                };
                _mm512_storeu_ps(dst.add(kk * NR + v * 16), wv);
            }
            for p in &mut wp {
                *p = p.wrapping_add(stride);
            }
        }
    }

    /// Rows `i..i + rows` (`rows ≤ 8`; `xb` is their interleaved block), columns `j..j + 48`
    /// (masked), `k` range `k0..k0 + kc` from the packed panel: accumulators start at zero on the
    /// first range and at the stored partial sums after, so each output is one in-order FMA chain
    /// over all of `k`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        xb: &[f32],
        pack: &[f32],
        y: *mut f32,
        rows: usize,
        n: usize,
        i: usize,
        j: usize,
        k0: usize,
        kc: usize,
        masks: &[__mmask16; NV],
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        // A vector past the panel's width (mask 0) is never addressed: for the last row its
        // column lies past the end of `y`, and forming that pointer is already out of bounds.
        if k0 > 0 {
            for (r, row) in acc.iter_mut().enumerate().take(rows) {
                for (v, a) in row.iter_mut().enumerate() {
                    if masks[v] != 0 {
                        *a = _mm512_maskz_loadu_ps(masks[v], y.add((i + r) * n + j + v * 16));
                    }
                }
            }
        }
        let mut xp = xb.as_ptr().add(k0 * MR);
        let mut pp = pack.as_ptr();
        for _ in 0..kc {
            let wv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(pp.add(v * 16)));
            for (r, row) in acc.iter_mut().enumerate() {
                let xr = _mm512_set1_ps(*xp.add(r));
                for (a, &wv) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xr, wv, *a);
                }
            }
            pp = pp.add(NR);
            xp = xp.add(MR);
        }
        for (r, row) in acc.iter().enumerate().take(rows) {
            for (v, a) in row.iter().enumerate() {
                if masks[v] != 0 {
                    _mm512_mask_storeu_ps(y.add((i + r) * n + j + v * 16), masks[v], *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(s: &mut u32) -> f32 {
        *s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (*s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }

    #[test]
    fn rows_equal_the_decode_kernel_bit_for_bit() {
        let mut s = 11u32;
        for (m, k, n) in [
            (1, 1, 1),
            (3, 0, 5),
            (2, 3, 5),
            (9, 7, 17),
            (13, 300, 49),
            (8, 576, 960),
            (21, 513, 100),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd(&mut s)).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rnd(&mut s)).collect();
            let mut y = vec![f32::NAN; m * n];
            if !gemm(&x, &w, &mut y, m, k, n) {
                return; // no AVX-512 here: callers fall back to burn's matmul
            }
            for r in 0..m {
                let mut want = vec![0f32; n];
                crate::kernels::linear::tiles::matvec(&x[r * k..(r + 1) * k], &w, &mut want);
                assert_eq!(
                    &y[r * n..(r + 1) * n],
                    &want[..],
                    "m={m} k={k} n={n} row {r}"
                );
            }
        }
    }

    #[test]
    fn sixteen_bit_weights_give_the_rows_of_their_f32_values() {
        let mut s = 13u32;
        for (m, k, n) in [(2, 3, 5), (9, 7, 17), (13, 300, 49), (8, 576, 97)] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd(&mut s)).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rnd(&mut s)).collect();
            let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let wide_bf: Vec<f32> = bf.iter().map(|v| v.to_f32()).collect();
            let wide_hf: Vec<f32> = hf.iter().map(|v| v.to_f32()).collect();
            let (mut a, mut b) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            if !gemm(&x, &bf, &mut a, m, k, n) {
                return;
            }
            assert!(gemm(&x, &wide_bf, &mut b, m, k, n));
            assert_eq!(a, b, "bf16 m={m} k={k} n={n}");
            assert!(gemm(&x, &hf, &mut a, m, k, n));
            assert!(gemm(&x, &wide_hf, &mut b, m, k, n));
            assert_eq!(a, b, "f16 m={m} k={k} n={n}");
        }
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --lib gemm_speed -- --ignored --nocapture`: GFLOP/s of the prefill shapes.
    #[test]
    #[ignore]
    fn gemm_speed() {
        for (m, k, n) in [
            (128, 576, 1536),
            (128, 1536, 576),
            (128, 576, 576),
            (128, 576, 960),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut y = vec![0f32; m * n];
            super::gemm(&x, &w, &mut y, m, k, n);
            let reps = 50;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                super::gemm(&x, &w, &mut y, m, k, n);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let cold: Vec<Vec<f32>> = (0..40)
                .map(|c| w.iter().map(|v| v + c as f32).collect())
                .collect();
            let t = std::time::Instant::now();
            for c in &cold {
                super::gemm(&x, c, &mut y, m, k, n);
            }
            let sc = t.elapsed().as_secs_f64() / cold.len() as f64;
            println!(
                "{m}x{k}x{n}: {:.1} GFLOP/s, weights from memory {:.1}",
                2.0 * (m * k * n) as f64 / s / 1e9,
                2.0 * (m * k * n) as f64 / sc / 1e9
            );
        }
    }
}
