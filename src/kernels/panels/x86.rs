//! The panel kernels for AVX-512F, and for AVX2 (+ FMA, F16C).

use super::{Side, WeightShape, PANEL};
use crate::kernels::weight::Weight;
use std::arch::x86_64::*;

/// Bytes ahead in a panel's stream that [`rows_avx512`] prefetches: several rows of work per
/// weight line, so the lines must be asked for well ahead.
const AHEAD: usize = 4096;

/// Columns `j0..j1` (`j0` a multiple of 16) of `m ≤ 8` rows, two panels at a time.
///
/// # Safety
/// The CPU has AVX-512F; `xi` is `[k][8]`; `w` holds `shape.len()` values as panels; `y` is
/// `[m, shape.n]` and no one else writes its columns `j0..j1` meanwhile.
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn rows_avx512<W: Weight, const M: usize>(
    xi: &[f32],
    w: &[W],
    shape: WeightShape,
    j0: usize,
    j1: usize,
    y: *mut f32,
) {
    let (k, n) = (shape.k, shape.n);
    debug_assert!(j0.is_multiple_of(PANEL) && j1 <= n && (1..=8).contains(&M));
    let mut j = j0;
    while j < j1 {
        let two = j + PANEL < j1;
        let p0 = w.as_ptr().add(shape.at(0, j));
        let p1 = if two {
            w.as_ptr().add(shape.at(0, j + PANEL))
        } else {
            p0
        };
        // `M` rows known at compile time: the accumulators stay in registers.
        let mut acc = [[_mm512_setzero_ps(); M]; 2];
        for i in 0..k {
            _mm_prefetch::<_MM_HINT_T1>((p0.add(i * PANEL) as *const i8).wrapping_add(AHEAD));
            let w0 = W::load16(p0.add(i * PANEL));
            let w1 = if two {
                _mm_prefetch::<_MM_HINT_T1>((p1.add(i * PANEL) as *const i8).wrapping_add(AHEAD));
                W::load16(p1.add(i * PANEL))
            } else {
                _mm512_setzero_ps()
            };
            let xr = xi.as_ptr().add(i * 8);
            // Indexed by a constant range (not an iterator chain): LLVM unrolls it and keeps the
            // accumulators in registers; through `zip`/`enumerate` they stay on the stack, a
            // load and a store around every multiply-add.
            #[allow(clippy::needless_range_loop)]
            for r in 0..M {
                let xv = _mm512_set1_ps(*xr.add(r));
                acc[0][r] = _mm512_fmadd_ps(xv, w0, acc[0][r]);
                acc[1][r] = _mm512_fmadd_ps(xv, w1, acc[1][r]);
            }
        }
        for (t, rows) in acc.iter().enumerate().take(1 + usize::from(two)) {
            let c = j + t * PANEL;
            let left = (j1 - c).min(PANEL);
            let mask = ((1u32 << left) - 1) as __mmask16;
            for (r, a) in rows.iter().enumerate() {
                _mm512_mask_storeu_ps(y.add(r * n + c), mask, *a);
            }
        }
        j += if two { 2 * PANEL } else { PANEL };
    }
}

/// [`super::panel_run_of`] with `V` vectors of 16 lanes per panel line, `GROUP` panels read
/// side by side (one stream each).
///
/// # Safety
/// The CPU has AVX-512F, `V · 16` is the panel width of `W` and panels
/// `first..⌈(first · width + out.len()) / width⌉` of `x.len()` lines each lie in `p`.
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn run_avx512<W: Weight, const V: usize, const GROUP: usize>(
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
                    _mm_prefetch::<_MM_HINT_T1>((line as *const i8).wrapping_add(1024));
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

/// The first `GROUP` 16-column panels of [`super::panel_run_of`] (fewer when `out` is shorter:
/// the missing ones read the last again and are not stored) and `side`'s `x·A`, `SG` groups of
/// 16 columns (the last perhaps partial), in one pass down the rows: one more stream beside the
/// panels', every output one fused multiply-add chain over the rows in order. No branch in the
/// row loop: `GROUP`, `SG` and every accumulator index are constants.
///
/// # Safety
/// The CPU has AVX-512F; `out` holds 1 to `16 · GROUP` outputs of panels from `first` on, which
/// lie in `p` with `x.len()` lines each; `side` [`Side::fits`] `x.len()` rows and
/// `side.width.div_ceil(16) == SG`.
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn side_avx512<W: Weight, S: Weight, const GROUP: usize, const SG: usize>(
    x: &[f32],
    p: &[W],
    first: usize,
    out: &mut [f32],
    side: &mut Side<'_, S>,
) {
    let k = x.len();
    let np = out.len().div_ceil(PANEL);
    debug_assert!((1..=GROUP).contains(&np) && side.width.div_ceil(16) == SG);
    let base: [*const W; GROUP] =
        std::array::from_fn(|t| p.as_ptr().add((first + t.min(np - 1)) * k * PANEL));
    let (a, stride, width) = (side.a.as_ptr(), side.stride, side.width);
    let last = width - 16 * (SG - 1);
    let mask = ((1u32 << last) - 1) as __mmask16;
    let whole = side.whole_rows(k);
    // (Whole groups are read whole in every row: `load16_part` only ever gets fewer than 16.)
    debug_assert!(side.fits(k) && (last < 16 || whole == k));
    let mut acc = [_mm512_setzero_ps(); GROUP];
    let mut sacc = [_mm512_setzero_ps(); SG];
    // One row of the panels; the side's row follows. Two loops, so that the main one has no
    // branch and no call (a 16-bit partial load copies through memory).
    macro_rules! panels_row {
        ($i:expr, $xi:expr) => {
            #[allow(clippy::needless_range_loop)]
            for t in 0..GROUP {
                let line = base[t].add($i * PANEL);
                _mm_prefetch::<_MM_HINT_T1>((line as *const i8).wrapping_add(1024));
                acc[t] = _mm512_fmadd_ps($xi, W::load16(line), acc[t]);
            }
        };
    }
    for i in 0..whole {
        let xi = _mm512_set1_ps(*x.get_unchecked(i));
        panels_row!(i, xi);
        let row = a.add(i * stride);
        #[allow(clippy::needless_range_loop)]
        for g in 0..SG {
            // Thirty-two rows ahead, into L2: without it the side's stream, too slow for the
            // hardware prefetchers to pick up beside the panels', stalls the pass (measurements:
            // benches/RESULTS.md).
            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(32 * stride + 16 * g) as *const i8);
            sacc[g] = _mm512_fmadd_ps(xi, S::load16(row.add(16 * g)), sacc[g]);
        }
    }
    for i in whole..k {
        // The last rows: the last group's columns read exactly.
        let xi = _mm512_set1_ps(*x.get_unchecked(i));
        panels_row!(i, xi);
        let row = a.add(i * stride);
        #[allow(clippy::needless_range_loop)]
        for g in 0..SG - 1 {
            sacc[g] = _mm512_fmadd_ps(xi, S::load16(row.add(16 * g)), sacc[g]);
        }
        let v = S::load16_part(row.add(16 * (SG - 1)), mask, last);
        sacc[SG - 1] = _mm512_fmadd_ps(xi, v, sacc[SG - 1]);
    }
    for (t, a) in acc.iter().enumerate().take(np) {
        let j = t * PANEL;
        let cols = PANEL.min(out.len() - j);
        let m = ((1u32 << cols) - 1) as __mmask16;
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), m, *a);
    }
    #[allow(clippy::needless_range_loop)]
    for g in 0..SG - 1 {
        _mm512_storeu_ps(side.xa.as_mut_ptr().add(16 * g), sacc[g]);
    }
    _mm512_mask_storeu_ps(side.xa.as_mut_ptr().add(16 * (SG - 1)), mask, sacc[SG - 1]);
}

/// [`super::panel_run_of`] on 16-column panels with AVX2: each line is two vectors of eight,
/// `GROUP` panels side by side (two accumulators each). Same arithmetic as [`run_avx512`]: every
/// output one fused multiply-add chain over the rows in order.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, the panels are 16 wide and panels
/// `first..⌈(first · 16 + out.len()) / 16⌉` of `x.len()` lines each lie in `p`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn run_avx2<W: Weight, const GROUP: usize>(
    x: &[f32],
    p: &[W],
    first: usize,
    out: &mut [f32],
) {
    let k = x.len();
    let panels = out.len().div_ceil(PANEL);
    let mut q = 0;
    while q < panels {
        let np = (panels - q).min(GROUP);
        // Pointers past `np` repeat the last panel (read, never stored).
        let base: [*const W; GROUP] =
            std::array::from_fn(|t| p.as_ptr().add((first + q + t.min(np - 1)) * k * PANEL));
        let mut acc = [[_mm256_setzero_ps(); 2]; GROUP];
        for i in 0..k {
            let xi = _mm256_set1_ps(*x.get_unchecked(i));
            #[allow(clippy::needless_range_loop)]
            for t in 0..GROUP {
                if t < np {
                    let line = base[t].add(i * PANEL);
                    _mm_prefetch::<_MM_HINT_T1>((line as *const i8).wrapping_add(1024));
                    acc[t][0] = _mm256_fmadd_ps(xi, W::load8(line), acc[t][0]);
                    acc[t][1] = _mm256_fmadd_ps(xi, W::load8(line.add(8)), acc[t][1]);
                }
            }
        }
        for (t, lanes) in acc.iter().enumerate().take(np) {
            let j = (q + t) * PANEL;
            let cols = PANEL.min(out.len() - j);
            let mut tmp = [0f32; PANEL];
            _mm256_storeu_ps(tmp.as_mut_ptr(), lanes[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), lanes[1]);
            out[j..j + cols].copy_from_slice(&tmp[..cols]);
        }
        q += np;
    }
}

/// One 16-column panel at column `j` (a multiple of 16) for rows `r0..r0 + R` (`R ≤ 6`: two
/// accumulators a row, twelve of AVX2's sixteen registers), straight from the panel. Same
/// arithmetic as [`rows_avx512`].
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `xi` is `[k][8]` with `r0 + R ≤ 8`; `w` holds `shape.len()`
/// values as panels; `y` is `[m, shape.n]` with `r0 + R ≤ m`, and no one else writes its columns
/// `j..j + 16` meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_avx2<W: Weight, const R: usize>(
    xi: &[f32],
    w: &[W],
    shape: WeightShape,
    j: usize,
    r0: usize,
    y: *mut f32,
) {
    let (k, n) = (shape.k, shape.n);
    debug_assert!(j.is_multiple_of(PANEL) && j < n && r0 + R <= 8);
    let p = w.as_ptr().add(shape.at(0, j));
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // The first pass over a panel also asks for the next panel's line (the caller walks the
    // panels in order): two streams in flight instead of one, which speeds up batched decoding
    // on AVX2. (The AVX-512 kernel, two panels at a time, gains nothing from asking for the next
    // pair; measurements: benches/RESULTS.md.)
    let next = r0 == 0;
    for i in 0..k {
        _mm_prefetch::<_MM_HINT_T1>((p.add(i * PANEL) as *const i8).wrapping_add(AHEAD));
        if next {
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add((k + i) * PANEL) as *const i8);
        }
        let w0 = W::load8(p.add(i * PANEL));
        let w1 = W::load8(p.add(i * PANEL + 8));
        let xr = xi.as_ptr().add(i * 8 + r0);
        // Indexed by a constant range: the accumulators stay in registers.
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            let xv = _mm256_set1_ps(*xr.add(r));
            acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
        }
    }
    let cols = (n - j).min(PANEL);
    let mut tmp = [0f32; PANEL];
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(tmp.as_mut_ptr(), a[0]);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), a[1]);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), y.add((r0 + r) * n + j), cols);
    }
}
