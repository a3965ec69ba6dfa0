//! The GEMM for CPUs with AVX2 (+ FMA, F16C) but not AVX-512: 6 rows × 16 columns of
//! accumulators (twelve of the sixteen vector registers), the weight packed 16 columns at a time
//! (one stored panel) into an L1-sized block. Same arithmetic as the AVX-512 kernel and the
//! decode kernels: every output one fused multiply-add chain over `k` in order from zero.

use crate::kernels::panels::WeightShape;
use crate::kernels::weight::Weight;
use std::arch::x86_64::*;

/// Rows per register block.
const MR: usize = 6;
/// Columns per register block (two vectors of eight).
const NR: usize = 16;
/// `k` per pass over a packed block (`KC × 16` f32: 8 KB, in L1).
const KC: usize = 128;
/// How many weight rows ahead packing prefetches a row-major weight.
const PREFETCH: usize = 32;

/// `y = x·w` (`x` `[m, k]`, `w` held as `shape` says, `y` `[m, n]`), column blocks split over
/// rayon's threads.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `x.len() == m·k`, `w.len() == shape.len()`,
/// `y.len() == m·n`.
pub(crate) unsafe fn gemm<W: Weight>(
    x: &[f32],
    w: &[W],
    shape: WeightShape,
    y: &mut [f32],
    m: usize,
) {
    let (k, n) = (shape.k, shape.n);
    let xp = &crate::kernels::panels::interleaved(x, k, MR)[..];
    let y_addr = y.as_mut_ptr() as usize;
    super::column_tasks(n, NR, |j0, j1| {
        // SAFETY: AVX2 + FMA + F16C are present (the caller's contract); tasks write disjoint
        // column ranges `j0..j1` of `y`, which outlives the parallel loop; indices stay inside
        // the sizes the caller guarantees.
        unsafe { columns(xp, w, shape, y_addr as *mut f32, m, j0, j1) }
    });
}

/// Output columns `j0..j1` of every row.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn columns<W: Weight>(
    x: &[f32],
    w: &[W],
    shape: WeightShape,
    y: *mut f32,
    m: usize,
    j0: usize,
    j1: usize,
) {
    let (k, n) = (shape.k, shape.n);
    let mut pack = vec![0f32; KC * NR];
    let mut j = j0;
    while j < j1 {
        let width = (j1 - j).min(NR);
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            pack_block(w, &mut pack, shape, j, width, k0, kc);
            let mut i = 0;
            while i < m {
                let xb = x.as_ptr().add(i * k + k0 * MR);
                block(xb, &pack, y, (m - i).min(MR), n, i, j, width, k0, kc);
                i += MR;
            }
            k0 += kc;
        }
        j += width;
    }
}

/// Rows `k0..k0 + kc`, columns `j..j + width` of `w` into `pack` (`kc × 16`, zero past `width`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_block<W: Weight>(
    w: &[W],
    pack: &mut [f32],
    shape: WeightShape,
    j: usize,
    width: usize,
    k0: usize,
    kc: usize,
) {
    debug_assert!(pack.len() >= kc * NR);
    let stride = shape.row_stride();
    let mut wp = w.as_ptr().add(shape.at(k0, j));
    let dst = pack.as_mut_ptr();
    for kk in 0..kc {
        // Row-major, the rows lie a whole weight row apart, which the hardware prefetchers do
        // not follow (stored panels stream on their own; the hint costs little).
        if kk + PREFETCH < kc {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH * stride) as *const i8);
        }
        if width == NR {
            _mm256_storeu_ps(dst.add(kk * NR), W::load8(wp));
            _mm256_storeu_ps(dst.add(kk * NR + 8), W::load8(wp.add(8)));
        } else {
            for c in 0..NR {
                let v = if c < width {
                    (*wp.add(c)).to_f32()
                } else {
                    0.0
                };
                *dst.add(kk * NR + c) = v;
            }
        }
        wp = wp.wrapping_add(stride);
    }
}

/// Rows `i..i + rows` (`rows ≤ 6`; `xb` points at row `k0` of their interleaved block),
/// columns `j..j + width` from the packed block: accumulators start at zero on the first `k`
/// range and at the stored partial sums after, so each output is one in-order chain over `k`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    xb: *const f32,
    pack: &[f32],
    y: *mut f32,
    rows: usize,
    n: usize,
    i: usize,
    j: usize,
    width: usize,
    k0: usize,
    kc: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let mut tmp = [0f32; NR];
    if k0 > 0 {
        for (r, row) in acc.iter_mut().enumerate().take(rows) {
            let src = y.add((i + r) * n + j);
            if width == NR {
                row[0] = _mm256_loadu_ps(src);
                row[1] = _mm256_loadu_ps(src.add(8));
            } else {
                std::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), width);
                row[0] = _mm256_loadu_ps(tmp.as_ptr());
                row[1] = _mm256_loadu_ps(tmp.as_ptr().add(8));
            }
        }
    }
    let mut xp = xb;
    let mut pp = pack.as_ptr();
    for _ in 0..kc {
        let w0 = _mm256_loadu_ps(pp);
        let w1 = _mm256_loadu_ps(pp.add(8));
        // Indexed by a constant range: the accumulators stay in registers.
        #[allow(clippy::needless_range_loop)]
        for r in 0..MR {
            let xr = _mm256_set1_ps(*xp.add(r));
            acc[r][0] = _mm256_fmadd_ps(xr, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xr, w1, acc[r][1]);
        }
        pp = pp.add(NR);
        xp = xp.add(MR);
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        let dst = y.add((i + r) * n + j);
        if width == NR {
            _mm256_storeu_ps(dst, row[0]);
            _mm256_storeu_ps(dst.add(8), row[1]);
        } else {
            _mm256_storeu_ps(tmp.as_mut_ptr(), row[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), row[1]);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, width);
        }
    }
}
