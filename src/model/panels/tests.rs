//! Tests of the panel layout and kernels, and the panel speed probe.

use super::*;

mod layout {
    use super::*;

    fn rnd(seed: u32) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    #[test]
    fn panels_hold_the_weight_and_give_it_back() {
        let mut r = rnd(3);
        for (k, n) in [(0, 5), (1, 1), (3, 17), (5, 32), (7, 33), (2, 100)] {
            let w: Vec<f32> = (0..k * n).map(|_| r()).collect();
            let p = to_panels(&w, k, n);
            assert_eq!(p.len(), n.div_ceil(16) * k * 16, "k={k} n={n}");
            if k > 0 && n > 0 {
                // Row i, column j sits in panel j / 16, line i, lane j % 16.
                let (i, j) = (k - 1, n - 1);
                assert_eq!(p[(j / 16) * k * 16 + i * 16 + j % 16], w[i * n + j]);
            }
            assert_eq!(from_panels(&p, k, n), w, "k={k} n={n}");
            let h: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let ph = to_panels(&h, k, n);
            assert_eq!(ph.len(), n.div_ceil(32) * k * 32);
            assert_eq!(from_panels(&ph, k, n), h);
        }
    }

    /// The same bits as the row-major kernel, for every weight type and awkward shapes (partial
    /// panels, fewer panels than threads, groups of panels cut short).
    #[test]
    fn panels_give_the_row_major_kernels_results_bit_for_bit() {
        let mut r = rnd(11);
        for (k, n) in [
            (1, 1),
            (9, 17),
            (3, 33),
            (130, 4099),
            (576, 960),
            (8, 65),
            (2, 31),
        ] {
            let x: Vec<f32> = (0..k).map(|_| r()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| r()).collect();
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
            let check = |name: &str, want: &dyn Fn(&mut [f32]), got: &dyn Fn(&mut [f32])| {
                let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                want(&mut a);
                got(&mut b);
                assert!(same(&a, &b), "{name} k={k} n={n}");
            };
            let p = to_panels(&w, k, n);
            check("f32", &|y| crate::model::matvec::matvec(&x, &w, y), &|y| {
                matvec_panels(&x, &p, y)
            });
            let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let pb = to_panels(&bf, k, n);
            check(
                "bf16",
                &|y| crate::model::matvec::matvec(&x, &bf, y),
                &|y| matvec_panels(&x, &pb, y),
            );
            let pb16 = to_panels_of(&bf, k, n, 16);
            check(
                "bf16, 16 wide",
                &|y| crate::model::matvec::matvec(&x, &bf, y),
                &|y| matvec_panels_of(&x, &pb16, y, 16),
            );
            let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let ph = to_panels(&hf, k, n);
            check("f16", &|y| crate::model::matvec::matvec(&x, &hf, y), &|y| {
                matvec_panels(&x, &ph, y)
            });
            // The portable loop too (the kernel's fallback on CPUs without AVX-512).
            let mut y = vec![f32::NAN; n];
            for (q, chunk) in y.chunks_mut(16).enumerate() {
                let panel = &p[q * k * 16..(q + 1) * k * 16];
                chunk.fill(0.0);
                for (&xi, line) in x.iter().zip(panel.chunks(16)) {
                    for (o, &v) in chunk.iter_mut().zip(line) {
                        *o = xi.mul_add(v, *o);
                    }
                }
            }
            check("portable", &|a| a.copy_from_slice(&y), &|b| {
                matvec_panels(&x, &p, b)
            });
        }
    }
}

/// Every kernel that reads a held weight gives the same bits from panels as from rows: one row
/// (with a bias and low-rank terms), a few rows (batched decoding) and many (prefill), in f32 and
/// 16 bits, for shapes with partial panels.
#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod kernels {
    use super::*;
    use crate::backend::Flex;
    use crate::model::matvec::{try_linear, try_linear_in, RowTerm};
    use crate::model::precision::{held_tensor, host_f32};
    use crate::model::WeightDtype;

    #[test]
    fn every_kernel_reads_panels_as_rows_bit_for_bit() {
        if !(crate::model::host_math::avx512() || crate::model::host_math::avx2()) {
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

#[cfg(feature = "flex")]
mod speed {
    use super::*;

    /// `cargo test --lib panel_speed -- --ignored --nocapture`: the linears of 30 SmolLM2-135M
    /// layers (no head), one token, row-major (today's kernel) against panels, f32 and bf16, in
    /// alternating rounds on rayon's pool.
    #[test]
    #[ignore]
    fn panel_speed() {
        use crate::model::matvec::speed::LAYER;
        let shapes: Vec<(usize, usize)> = (0..30).flat_map(|_| LAYER).collect();
        let rows: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(k, n)| {
                (0..k * n)
                    .map(|i| ((i % 251) as f32 - 125.0) * 1e-3)
                    .collect()
            })
            .collect();
        let narrow = |w: &Vec<f32>| -> Vec<half::bf16> {
            w.iter().map(|&v| half::bf16::from_f32(v)).collect()
        };
        let rows16: Vec<Vec<half::bf16>> = rows.iter().map(narrow).collect();
        let pan: Vec<Vec<f32>> = rows
            .iter()
            .zip(&shapes)
            .map(|(w, &(k, n))| to_panels(w, k, n))
            .collect();
        let pan16: Vec<Vec<half::bf16>> = rows16
            .iter()
            .zip(&shapes)
            .map(|(w, &(k, n))| to_panels(w, k, n))
            .collect();
        let pan16n: Vec<Vec<half::bf16>> = rows16
            .iter()
            .zip(&shapes)
            .map(|(w, &(k, n))| to_panels_of(w, k, n, 16))
            .collect();
        let x = vec![0.01f32; 1536];
        let mut y = vec![0f32; 1536];
        let mut t = [0f64; 5];
        rayon::scope(|_| {
            for _ in 0..10 {
                for (v, tv) in t.iter_mut().enumerate() {
                    let s = std::time::Instant::now();
                    for _ in 0..5 {
                        for (l, &(k, n)) in shapes.iter().enumerate() {
                            let (x, y) = (&x[..k], &mut y[..n]);
                            match v {
                                0 => crate::model::matvec::matvec(x, &rows[l], y),
                                1 => matvec_panels(x, &pan[l], y),
                                2 => crate::model::matvec::matvec(x, &rows16[l], y),
                                3 => matvec_panels(x, &pan16[l], y),
                                _ => matvec_panels_of(x, &pan16n[l], y, 16),
                            }
                        }
                    }
                    *tv += s.elapsed().as_secs_f64();
                }
            }
        });
        let ms = t.map(|v| v / 50.0 * 1e3);
        println!(
            "f32: row-major {:.2} ms, panels {:.2} ms; bf16: row-major {:.2} ms, panels {:.2} ms; \
             bf16 / f32 speed: row-major {:.2}, panels {:.2}",
            ms[0],
            ms[1],
            ms[2],
            ms[3],
            ms[0] / ms[2],
            ms[1] / ms[3]
        );
        println!("bf16 panels 16 columns wide (as f32's): {:.2} ms", ms[4]);
        // Eight rows (a batch of sequences): the few-row kernels on rows and on panels.
        if crate::model::host_math::avx512() || crate::model::host_math::avx2() {
            let m = 8;
            let xs = vec![0.01f32; m * 1536];
            let mut ys = vec![0f32; m * 1536];
            let pan16w: Vec<Vec<f32>> = rows
                .iter()
                .zip(&shapes)
                .map(|(w, &(k, n))| to_panels_of(w, k, n, PANEL))
                .collect();
            let mut t = [0f64; 2];
            rayon::scope(|_| {
                for _ in 0..5 {
                    for (v, tv) in t.iter_mut().enumerate() {
                        let s = std::time::Instant::now();
                        for _ in 0..3 {
                            for (l, &(k, n)) in shapes.iter().enumerate() {
                                let (x, y) = (&xs[..m * k], &mut ys[..m * n]);
                                let shape = WeightShape {
                                    k,
                                    n,
                                    layout: if v == 0 { Layout::Rows } else { Layout::Panels },
                                };
                                let w = if v == 0 { &rows[l] } else { &pan16w[l] };
                                crate::model::few_rows::matmul_in(x, w, shape, y, m);
                            }
                        }
                        *tv += s.elapsed().as_secs_f64();
                    }
                }
            });
            println!(
                "8 rows f32: row-major {:.2} ms, panels {:.2} ms",
                t[0] / 15.0 * 1e3,
                t[1] / 15.0 * 1e3
            );
        }
    }
}

/// The helpers around held panels: loading from stored `[out, in]` parts, the tensor layout
/// conversions, the column gather of a tied head and the in-place merge give what the row-major
/// forms give.
#[cfg(feature = "flex")]
mod helpers {
    use super::*;
    use crate::backend::Flex;
    use crate::model::precision::{held_tensor, host_f32};
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
        use crate::model::merge::add_low_rank;
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
