//! Folding low-rank updates into weights on the host: an f32 weight in place (`W ± s·(A·B)` row
//! by row in parallel, on the weight's own buffer), a 16-bit weight rebuilt from its saved base
//! (`round(base + Σ s·(A·B))`, [`merged_16`]). Through burn ops each merge allocates (and
//! faults in) weight-sized buffers for `A·B` and the sum, and a 16-bit merge converts the whole
//! weight to f32 and back.

use burn::prelude::*;

use super::{f32s, held, prim, with_prim_mut};
use crate::backend::Flex;
use crate::kernels::panels::WeightShape;

/// `w ← w + s·(a·b)` (or `−` when `subtract`) on a uniquely held, contiguous f32 burn-flex
/// weight `[k, n]`, with `a` `[k, r]` and `b` `[r, n]` f32; `false` (nothing changed) when any of
/// that does not hold, so the caller can use burn's ops instead. Each row of `a·b` is computed
/// with the matrix–vector kernel (one multiply-add chain over the rank), then scaled and added,
/// as `(a·b)·s` then `w ± …` would be — so a merge followed by an unmerge subtracts what was
/// added.
pub(crate) fn add_low_rank(
    w: &mut Tensor<Flex, 2>,
    shape: WeightShape,
    a: &Tensor<Flex, 2>,
    b: &Tensor<Flex, 2>,
    scale: f32,
    subtract: bool,
) -> bool {
    use rayon::prelude::*;
    let ((k, n), [ka, r], [rb, nb]) = ((shape.k, shape.n), a.dims(), b.dims());
    if ka != k || rb != r || nb != n || r == 0 || n == 0 {
        return false;
    }
    let (at, bt) = (prim(a), prim(b));
    let (Some(ad), Some(bd)) = (f32s(&at), f32s(&bt)) else {
        return false;
    };
    with_prim_mut(w, |t| {
        if t.dtype() != burn::tensor::DType::F32
            || t.layout().contiguous_offsets() != Some((0, shape.len()))
        {
            return false;
        }
        let Some(wd) = t.try_storage_mut::<f32>() else {
            return false;
        };
        let Some(wd) = wd.get_mut(..shape.len()) else {
            return false;
        };
        let fold = |x: &mut f32, dj: f32| {
            let t = dj * scale;
            *x = if subtract { *x - t } else { *x + t };
        };
        let rows = (k / (4 * crate::kernels::weight::threads().max(1))).max(1);
        // Blocks of rows in parallel; row `i`'s values lie where `shape.at` says (one run
        // row-major, 16 in every panel): blocks never share an element.
        let w_addr = wd.as_mut_ptr() as usize;
        (0..k.div_ceil(rows)).into_par_iter().for_each(|c| {
            let mut dm = vec![0f32; DELTA_ROWS * n];
            let (lo, hi) = (c * rows, ((c + 1) * rows).min(k));
            for i0 in (lo..hi).step_by(DELTA_ROWS) {
                let m = DELTA_ROWS.min(hi - i0);
                delta_rows(ad, r, i0, m, bd, &mut dm[..m * n]);
                for (i, d) in (i0..).zip(dm[..m * n].chunks(n)) {
                    // Sixteen columns from a multiple of 16 lie together in either layout.
                    for (c, dc) in d.chunks(16).enumerate() {
                        // SAFETY: the run `shape.at(i, 16c) ..+ dc.len()` lies in the slice
                        // (`shape.len()` values, alive for the whole loop) for `i < k`; each
                        // task writes only its own rows, so no element is written twice.
                        let run = unsafe {
                            std::slice::from_raw_parts_mut(
                                (w_addr as *mut f32).add(shape.at(i, 16 * c)),
                                dc.len(),
                            )
                        };
                        run.iter_mut().zip(dc).for_each(|(x, &dj)| fold(x, dj));
                    }
                }
            }
        });
        true
    })
}

/// Rows of `A·B` computed together: `B` is read once for all of them.
const DELTA_ROWS: usize = crate::kernels::linear::batch::MAX_ROWS;

/// Rows `i0..i0 + m` of `a·b` (`a` `[·, r]`, `b` `[r, n]`, both row-major) into `d` (`[m, n]`),
/// each row bit for bit what the matrix–vector kernel gives it alone: `m` rows in one pass
/// through `b` where the CPU allows ([`crate::kernels::linear::batch::rows_serial`]; one row at a
/// time would read `b` from L2 once per row of the weight), else row by row.
fn delta_rows(a: &[f32], r: usize, i0: usize, m: usize, b: &[f32], d: &mut [f32]) {
    if r == 0 {
        d.fill(0.0);
        return;
    }
    let x = &a[i0 * r..(i0 + m) * r];
    if !crate::kernels::linear::batch::rows_serial(x, m, b, d) {
        let n = d.len() / m.max(1);
        for (row, out) in x.chunks(r).zip(d.chunks_mut(n)) {
            crate::kernels::linear::tiles::matvec_serial(row, b, out);
        }
    }
}

/// The weight `base` (16-bit, held as `shape` says) with `terms` (`A` `[k, r]`, `B` `[r, n]`,
/// scale) added — `base + (A₁·B₁)·s₁ + (A₂·B₂)·s₂ …` in f32, element by element, as burn's ops
/// would (each row of `A·B` one multiply-add chain over the rank) — and then rounded to the
/// base's precision (`narrow`), or kept in f32 (`narrow` false), in the same layout. `None` when
/// the tensors are not host-readable burn-flex ones (the caller then uses burn's ops).
pub(crate) fn merged_16(
    base: &Tensor<Flex, 2>,
    shape: WeightShape,
    terms: &[(&Tensor<Flex, 2>, &Tensor<Flex, 2>, f32)],
    narrow: bool,
) -> Option<Tensor<Flex, 2>> {
    use crate::backend::held::host_f32;
    use crate::kernels::weight::{Held, Weight};
    use burn::tensor::{DType, TensorCreationOptions};
    use rayon::prelude::*;
    let (k, n) = (shape.k, shape.n);
    if n == 0 {
        return None;
    }
    let bt = prim(base);
    let hb = held(&bt, shape.layout).filter(|h| h.len() == shape.len())?;
    let mut factors = Vec::with_capacity(terms.len());
    for (a, b, s) in terms {
        let ([ka, r], [rb, nb]) = (a.dims(), b.dims());
        if ka != k || rb != r || nb != n {
            return None;
        }
        factors.push((host_f32(*a), host_f32(*b), r, *s));
    }
    // Row `i` of the result into `out` (`shape.len()` values of `T`; zero-padded panels stay
    // zero): blocks of rows in parallel. Row `i`'s values lie where `shape.at` says, sixteen
    // together; each row is gathered, widened (`from`), folded and narrowed (`to`) whole.
    fn fold<W: Weight + bytemuck::Zeroable, T: Copy + Send + Sync + bytemuck::Zeroable>(
        base: &[W],
        shape: WeightShape,
        factors: &[(Vec<f32>, Vec<f32>, usize, f32)],
        from: impl Fn(&[W], &mut [f32]) + Sync,
        to: impl Fn(&[f32], &mut [T]) + Sync,
    ) -> Vec<T> {
        let (k, n) = (shape.k, shape.n);
        let mut out = crate::kernels::buffer::zeroed::<T>(shape.len());
        let rows = (k / (4 * crate::kernels::weight::threads().max(1))).max(1);
        let addr = out.as_mut_ptr() as usize;
        (0..k.div_ceil(rows)).into_par_iter().for_each(|c| {
            let mut row: Vec<W> = bytemuck::zeroed_vec(n);
            let mut acc = vec![0f32; DELTA_ROWS * n];
            let mut dm = vec![0f32; DELTA_ROWS * n];
            let mut narrow: Vec<T> = bytemuck::zeroed_vec(n);
            let (lo, hi) = (c * rows, ((c + 1) * rows).min(k));
            for i0 in (lo..hi).step_by(DELTA_ROWS) {
                let m = DELTA_ROWS.min(hi - i0);
                for (i, acc) in (i0..).zip(acc[..m * n].chunks_mut(n)) {
                    for (j, dst) in (0..n).step_by(16).zip(row.chunks_mut(16)) {
                        let at = shape.at(i, j);
                        copy_run(&base[at..at + dst.len()], dst);
                    }
                    from(&row, acc);
                }
                for (a, b, r, s) in factors {
                    delta_rows(a, *r, i0, m, b, &mut dm[..m * n]);
                    acc.iter_mut()
                        .zip(&dm[..m * n])
                        .for_each(|(x, &dj)| *x += dj * s);
                }
                for (i, acc) in (i0..).zip(acc[..m * n].chunks(n)) {
                    to(acc, &mut narrow);
                    for (j0, run) in narrow.chunks(16).enumerate() {
                        // SAFETY: the run `shape.at(i, 16·j0) ..+ run.len()` lies in `out`
                        // (`shape.len()` values, alive for the whole loop) for `i < k`; each
                        // task writes only its own rows, so no element is written twice.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                (addr as *mut T).add(shape.at(i, 16 * j0)),
                                run.len(),
                            )
                        };
                        copy_run(run, dst);
                    }
                }
            }
        });
        out
    }
    /// Copies a run of at most 16 values (`dst.len()`): whole runs as one fixed-size move
    /// (a `memcpy` call for every 16 values would be a large share of a bf16 merge).
    #[inline(always)]
    fn copy_run<X: Copy>(src: &[X], dst: &mut [X]) {
        match (
            <&[X; 16]>::try_from(src),
            <&mut [X; 16]>::try_from(&mut *dst),
        ) {
            (Ok(s), Ok(d)) => *d = *s,
            _ => dst.copy_from_slice(src),
        }
    }
    fn widen_bf16(src: &[half::bf16], dst: &mut [f32]) {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
    }
    fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    let keep = |x: &[f32], o: &mut [f32]| o.copy_from_slice(x);
    let dims = base.dims();
    let dev = base.device();
    let opts = |dt| TensorCreationOptions::<Flex>::new(dev).with_dtype(dt);
    Some(match (hb, narrow) {
        (Held::Bf16(h), true) => {
            let v = fold(
                h,
                shape,
                &factors,
                widen_bf16,
                crate::kernels::weight::bf16_slice,
            );
            Tensor::from_data(TensorData::new(v, dims), opts(DType::BF16))
        }
        (Held::F16(h), true) => {
            let v = fold(
                h,
                shape,
                &factors,
                widen_f16,
                crate::kernels::weight::f16_slice,
            );
            Tensor::from_data(TensorData::new(v, dims), opts(DType::F16))
        }
        (Held::Bf16(h), false) => {
            let v = fold(h, shape, &factors, widen_bf16, keep);
            Tensor::from_data(TensorData::new(v, dims), &dev)
        }
        (Held::F16(h), false) => {
            let v = fold(h, shape, &factors, widen_f16, keep);
            Tensor::from_data(TensorData::new(v, dims), &dev)
        }
        (Held::F32(_) | Held::Q8_0(_) | Held::Q4_0(_), _) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::held::host_f32;

    fn t(v: Vec<f32>, shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    /// The in-place fold equals burn's `w + (a·b)·s` (to rounding), its reverse takes it out
    /// again, and a shared weight is left alone (the caller then uses burn's ops).
    #[test]
    fn folds_in_place_as_burn_would_and_back() {
        let (k, r, n) = (37, 5, 70);
        let f = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7 + seed) % 23) as f32 - 11.0) * 0.03)
                .collect()
        };
        let (w0, a, b) = (f(k * n, 1), t(f(k * r, 2), [k, r]), t(f(r * n, 3), [r, n]));
        let want = host_f32(&(t(w0.clone(), [k, n]) + a.clone().matmul(b.clone()) * 0.5));
        let rows = WeightShape::rows([k, n]);
        let mut w = t(w0.clone(), [k, n]);
        assert!(add_low_rank(&mut w, rows, &a, &b, 0.5, false));
        let max_diff =
            |x: &[f32], y: &[f32]| x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        let err = max_diff(&host_f32(&w), &want);
        assert!(err < 1e-5, "merged differs from burn's by {err}");
        assert!(add_low_rank(&mut w, rows, &a, &b, 0.5, true));
        let err = max_diff(&host_f32(&w), &w0);
        assert!(err < 1e-5, "unmerged differs from the weight by {err}");
        let shared = w.clone();
        assert!(!add_low_rank(&mut w, rows, &a, &b, 0.5, false));
        assert_eq!(host_f32(&w), host_f32(&shared));
        assert!(
            !add_low_rank(&mut w, WeightShape::rows([r, k]), &b, &a, 0.5, false),
            "shapes that do not fit"
        );
    }

    /// A 16-bit weight rebuilt on the host, row-major or in panels, rounded to its precision or
    /// kept in f32, is `base + (A₁·B₁)·s₁ + (A₂·B₂)·s₂` as burn computes it (to f32 rounding,
    /// then at most one 16-bit step apart), in the base's dtype and layout.
    #[test]
    fn rebuilds_16_bit_weights_as_burn_would() {
        use crate::backend::held::{panel_tensor, rows_tensor};
        use crate::kernels::panels::Layout;
        use crate::model::precision::{held_tensor, WeightDtype};
        use burn::tensor::DType;
        let (k, n) = (37, 70);
        let f = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7 + seed) % 23) as f32 - 11.0) * 0.03)
                .collect()
        };
        let dev = Default::default();
        let terms = [
            (t(f(k * 5, 2), [k, 5]), t(f(5 * n, 3), [5, n]), 0.5),
            (t(f(k * 3, 4), [k, 3]), t(f(3 * n, 5), [3, n]), -2.0),
        ];
        let refs: Vec<_> = terms.iter().map(|(a, b, s)| (a, b, *s)).collect();
        for p in [WeightDtype::Bf16, WeightDtype::F16] {
            let base = held_tensor::<Flex>(f(k * n, 1), [k, n], p, &dev);
            let mut want = t(host_f32(&base), [k, n]);
            for (a, b, s) in &terms {
                want = want + a.clone().matmul(b.clone()) * *s;
            }
            let want = host_f32(&want);
            for layout in [Layout::Rows, Layout::Panels] {
                let shape = WeightShape { k, n, layout };
                let held = match layout {
                    Layout::Panels => panel_tensor(&base),
                    _ => base.clone(),
                };
                for narrow in [false, true] {
                    let got = merged_16(&held, shape, &refs, narrow).unwrap();
                    let dtype = if narrow { base.dtype() } else { DType::F32 };
                    assert_eq!((got.dtype(), got.dims()), (dtype, held.dims()));
                    let got = host_f32(&match layout {
                        Layout::Panels => rows_tensor(&got, k, n),
                        _ => got,
                    });
                    // f32: rounding apart; 16-bit: within one step of the f32 value's rounding.
                    let tol = if narrow { 1.0 / 128.0 } else { 1e-6 };
                    let bad = got
                        .iter()
                        .zip(&want)
                        .position(|(g, w)| (g - w).abs() > tol * w.abs().max(1.0));
                    assert!(
                        bad.is_none(),
                        "{p:?} {layout:?} narrow={narrow}: element {bad:?}"
                    );
                }
            }
        }
    }
}
