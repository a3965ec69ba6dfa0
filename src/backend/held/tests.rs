//! Held panels against rows through the flex seam: every linear kernel, the layout conversions,
//! the column gather and the in-place merge give the row-major forms' bits.

use crate::kernels::panels::*;

/// Every kernel that reads a held weight gives the same bits from panels as from rows: one row
/// (with a bias and low-rank terms), a few rows (batched decoding) and many (prefill), in f32 and
/// 16 bits, for shapes with partial panels.
#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod kernels {
    use super::*;
    use crate::backend::flex::linear::{try_linear, try_linear_in, RowTerm};
    use crate::backend::held::host_f32;
    use crate::backend::held::*;
    use crate::backend::Flex;
    use crate::model::precision::held_tensor;
    use crate::model::WeightDtype;

    #[test]
    fn every_kernel_reads_panels_as_rows_bit_for_bit() {
        if !(crate::kernels::math::avx512() || crate::kernels::math::avx2()) {
            return; // panels are only held on CPUs with AVX-512F or AVX2
        }
        let dev = Default::default();
        let mut s = 5u32;
        let mut rnd = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        for (k, n) in [(1, 1), (9, 17), (70, 100), (576, 960), (33, 250)] {
            let w = rnd(k * n);
            let (a, b, bias) = (rnd(k * 4), rnd(4 * n), rnd(n));
            let t2 = |v: Vec<f32>, d: [usize; 2]| {
                Tensor::<Flex, 2>::from_data(TensorData::new(v, d), &dev)
            };
            let (at, bt) = (t2(a, [k, 4]), t2(b, [4, n]));
            let bias = Tensor::<Flex, 1>::from_data(TensorData::new(bias, [n]), &dev);
            for dtype in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16] {
                let rows = held_tensor::<Flex>(w.clone(), [k, n], dtype, &dev);
                let values = host_f32(&rows);
                let panels = held_tensor::<Flex>(
                    to_panels_of(&values, k, n, PANEL),
                    [n.div_ceil(PANEL) * k, PANEL],
                    dtype,
                    &dev,
                );
                let shape = WeightShape {
                    k,
                    n,
                    layout: Layout::Panels,
                };
                for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 20] {
                    let x = t2(rnd(m * k), [m, k]);
                    let terms = [RowTerm {
                        a: &at,
                        b: &bt,
                        scale: 0.5,
                        rows: None,
                    }];
                    for (bias, terms) in [(None, &[][..]), (Some(&bias), &terms[..])] {
                        let want = try_linear(&x, &rows, bias, terms).map(|y| host_f32(&y));
                        let got =
                            try_linear_in(&x, &panels, shape, bias, terms).map(|y| host_f32(&y));
                        assert!(want.is_some(), "{dtype:?} k={k} n={n} m={m}");
                        let same = |p: &[f32], q: &[f32]| {
                            p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits())
                        };
                        assert!(
                            same(&want.unwrap(), &got.unwrap()),
                            "{dtype:?} k={k} n={n} m={m} bias={}",
                            bias.is_some()
                        );
                    }
                }
            }
        }
    }
}

/// The helpers around held panels: loading from stored `[out, in]` parts, the tensor layout
/// conversions, the column gather of a tied head and the in-place merge give what the row-major
/// forms give.
#[cfg(feature = "flex")]
mod helpers {
    use super::*;
    use crate::backend::held::host_f32;
    use crate::backend::held::*;
    use crate::backend::Flex;
    use crate::model::linear::columns::columns_of;
    use crate::model::precision::held_tensor;
    use crate::model::WeightDtype;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7 + seed) % 29) as f32 - 14.0) * 0.01)
            .collect()
    }

    #[test]
    fn loads_conversions_gathers_and_merges_agree_with_rows() {
        let dev = Default::default();
        // A fused weight stored as three parts of 20, 7 and 6 rows (`n` = 33: a partial panel),
        // `k` = 5 inputs.
        let (k, parts_rows) = (5, [20usize, 7, 6]);
        let n: usize = parts_rows.iter().sum();
        let parts: Vec<Vec<f32>> = parts_rows
            .iter()
            .enumerate()
            .map(|(p, &r)| values(r * k, p))
            .collect();
        let stacked: Vec<f32> = parts.concat(); // [n, k]
        let rows: Vec<f32> = (0..k * n).map(|x| stacked[(x % n) * k + x / n]).collect(); // [k, n]
        let refs: Vec<&[f32]> = parts.iter().map(|p| &p[..]).collect();
        let got = panels_map(&refs, k, |a: &[f32], b: &mut [f32]| b.copy_from_slice(a));
        assert_eq!(got, to_panels_of(&rows, k, n, PANEL), "f32 parts");
        let parts16: Vec<Vec<half::bf16>> = parts
            .iter()
            .map(|p| p.iter().map(|&v| half::bf16::from_f32(v)).collect())
            .collect();
        let refs16: Vec<&[half::bf16]> = parts16.iter().map(|p| &p[..]).collect();
        let got16 = panels_map(&refs16, k, |a: &[f32], b: &mut [f32]| b.copy_from_slice(a));
        let rows16: Vec<f32> = rows
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert_eq!(got16, to_panels_of(&rows16, k, n, PANEL), "bf16 parts");

        let shape = WeightShape {
            k,
            n,
            layout: Layout::Panels,
        };
        for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
            let t = held_tensor::<Flex>(rows.clone(), [k, n], dtype, &dev);
            let p = panel_tensor(&t);
            assert_eq!(p.dims(), [n.div_ceil(PANEL) * k, PANEL]);
            assert_eq!(p.dtype(), t.dtype(), "{dtype:?} keeps its dtype");
            assert_eq!(host_f32(&rows_tensor(&p, k, n)), host_f32(&t), "{dtype:?}");
            let ids = [0u32, 32, 17, 5];
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&j| (0..k).map(move |i| (i, j as usize)))
                .map(|(i, j)| host_f32(&t)[i * n + j])
                .collect();
            assert_eq!(host_f32(&columns_of(&p, shape, &ids)), want, "{dtype:?}");
        }

        let t2 =
            |v: Vec<f32>, d: [usize; 2]| Tensor::<Flex, 2>::from_data(TensorData::new(v, d), &dev);
        let (a, b) = (t2(values(k * 3, 1), [k, 3]), t2(values(3 * n, 2), [3, n]));
        let mut w_rows = t2(rows.clone(), [k, n]);
        let mut w_pan = t2(
            to_panels_of(&rows, k, n, PANEL),
            [n.div_ceil(PANEL) * k, PANEL],
        );
        use crate::backend::flex::merge::add_low_rank;
        assert!(add_low_rank(
            &mut w_rows,
            WeightShape::rows([k, n]),
            &a,
            &b,
            0.5,
            false
        ));
        assert!(add_low_rank(&mut w_pan, shape, &a, &b, 0.5, false));
        assert_eq!(
            host_f32(&w_pan),
            to_panels_of(&host_f32(&w_rows), k, n, PANEL),
            "the same fold, bit for bit"
        );
    }
}
