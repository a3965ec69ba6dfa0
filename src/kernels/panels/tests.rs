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
            check(
                "f32",
                &|y| crate::kernels::linear::tiles::matvec(&x, &w, y),
                &|y| matvec_panels(&x, &p, y),
            );
            let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let pb = to_panels(&bf, k, n);
            check(
                "bf16",
                &|y| crate::kernels::linear::tiles::matvec(&x, &bf, y),
                &|y| matvec_panels(&x, &pb, y),
            );
            let pb16 = to_panels_of(&bf, k, n, 16);
            check(
                "bf16, 16 wide",
                &|y| crate::kernels::linear::tiles::matvec(&x, &bf, y),
                &|y| matvec_panels_of(&x, &pb16, y, 16),
            );
            let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let ph = to_panels(&hf, k, n);
            check(
                "f16",
                &|y| crate::kernels::linear::tiles::matvec(&x, &hf, y),
                &|y| matvec_panels(&x, &ph, y),
            );
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

#[cfg(feature = "flex")]
mod speed {
    use super::*;

    /// `cargo test --lib panel_speed -- --ignored --nocapture`: the linears of 30 SmolLM2-135M
    /// layers (no head), one token, row-major against panels, f32 and bf16, in alternating rounds
    /// on rayon's pool.
    #[test]
    #[ignore]
    fn panel_speed() {
        // `(in, out)` of one SmolLM2-135M layer's linears: q/k/v, proj, fc_1, fc_2, mlp proj.
        const LAYER: [(usize, usize); 5] = [
            (576, 960),
            (576, 576),
            (576, 1536),
            (576, 1536),
            (1536, 576),
        ];
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
                                0 => crate::kernels::linear::tiles::matvec(x, &rows[l], y),
                                1 => matvec_panels(x, &pan[l], y),
                                2 => crate::kernels::linear::tiles::matvec(x, &rows16[l], y),
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
        if crate::kernels::math::avx512() || crate::kernels::math::avx2() {
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
                                crate::kernels::linear::batch::matmul_in(x, w, shape, y, m);
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
