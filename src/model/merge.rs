//! Folding a low-rank update into an f32 weight in place: `W ± s·(A·B)` row by row in parallel,
//! on the weight's own buffer. Through burn each merge allocated (and faulted in) a new
//! weight-sized buffer for `A·B` and another for the sum.

use burn::prelude::*;

use super::panels::WeightShape;

/// `w ← w + s·(a·b)` (or `−` when `subtract`) on a uniquely held, contiguous f32 burn-flex
/// weight `[k, n]`, with `a` `[k, r]` and `b` `[r, n]` f32; `false` (nothing changed) when any of
/// that does not hold, so the caller can use burn's ops instead. Each row of `a·b` is computed
/// with the matrix–vector kernel (one multiply-add chain over the rank), then scaled and added,
/// as `(a·b)·s` then `w ± …` would be — so a merge followed by an unmerge subtracts what was
/// added.
pub(crate) fn add_low_rank<B: Backend>(
    w: &mut Tensor<B, 2>,
    shape: WeightShape,
    a: &Tensor<B, 2>,
    b: &Tensor<B, 2>,
    scale: f32,
    subtract: bool,
) -> bool {
    #[cfg(feature = "flex")]
    {
        use super::weight::{f32s, flex, with_flex_mut};
        use rayon::prelude::*;
        let ((k, n), [ka, r], [rb, nb]) = ((shape.k, shape.n), a.dims(), b.dims());
        if ka != k || rb != r || nb != n || r == 0 {
            return false;
        }
        let (Some(at), Some(bt)) = (flex(a), flex(b)) else {
            return false;
        };
        let (Some(ad), Some(bd)) = (f32s(&at), f32s(&bt)) else {
            return false;
        };
        with_flex_mut(w, |t| {
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
            let rows = (k / (4 * super::weight::threads().max(1))).max(1);
            // Blocks of rows in parallel; row `i`'s values lie where `shape.at` says (one run
            // row-major, 16 in every panel): blocks never share an element.
            let w_addr = wd.as_mut_ptr() as usize;
            (0..k.div_ceil(rows)).into_par_iter().for_each(|c| {
                let mut d = vec![0f32; n];
                for i in c * rows..((c + 1) * rows).min(k) {
                    super::matvec::matvec_serial(&ad[i * r..(i + 1) * r], bd, &mut d);
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
            });
            true
        })
        .unwrap_or(false)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (w, shape, a, b, scale, subtract);
        false
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::Flex;
    use crate::model::precision::host_f32;

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
}
