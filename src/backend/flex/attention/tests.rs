//! Attention on burn-flex tensors against a double-precision reference, the register kernels
//! against the plain loops bit for bit, and a speed probe.

use super::*;
type F = crate::backend::Flex;

/// Against a double-precision reference: GQA and multi-query, a cache larger than its used
/// part (strided views), decode and prefill positions, sliding window, soft-capping.
#[test]
fn matches_a_double_precision_reference() {
    let mut s = 5u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    // Fewer than eight queries take the few-queries path, more the blocked one (several
    // blocks of sixteen, head sizes with and without a tail past sixteen).
    for (nh, nkv, hs, t, pos, window, softcap) in [
        (4, 2, 8, 5, 0, None, None),
        (4, 1, 8, 3, 6, Some(4), Some(5.0)),
        (2, 2, 8, 1, 9, None, None),
        (6, 3, 8, 7, 2, Some(3), None),
        (4, 2, 8, 20, 0, None, None),
        (3, 1, 24, 37, 5, None, Some(5.0)),
        (2, 2, 32, 33, 3, Some(10), None),
        (2, 1, 16, 8, 40, Some(9), None),
        // Decoding over several runs of keys (one task each), a window across their edge.
        (6, 2, 16, 1, 300, None, None),
        (4, 1, 8, 3, 260, Some(200), Some(5.0)),
        (3, 3, 24, 2, 255, Some(130), None),
        (4, 2, 8, 7, 127, None, None),
    ] {
        let (cap, sl) = ((pos + t).max(96), pos + t);
        let q: Vec<f32> = (0..nh * t * hs).map(|_| rnd() * 4.0).collect();
        let kc: Vec<f32> = (0..nkv * cap * hs).map(|_| rnd() * 4.0).collect();
        let vc: Vec<f32> = (0..nkv * cap * hs).map(|_| rnd()).collect();
        let dev = Default::default();
        let qt = Tensor::<F, 4>::from_data(TensorData::new(q.clone(), [1, nh, t, hs]), &dev);
        let cache = |d: &Vec<f32>| {
            Tensor::<F, 4>::from_data(TensorData::new(d.clone(), [1, nkv, cap, hs]), &dev)
                .narrow(2, 0, sl)
        };
        let scale = 1.0 / (hs as f64).sqrt();
        let y = try_attention(
            &qt,
            &cache(&kc),
            &cache(&vc),
            AttentionSpec {
                scale,
                softcap,
                pos,
                window,
            },
        )
        .expect("flex takes the host path")
        .into_data()
        .into_vec::<f32>()
        .unwrap();
        for h in 0..nh {
            let g = h / (nh / nkv);
            for i in 0..t {
                let abs = pos + i;
                let lo = window.map_or(0, |w: usize| (abs + 1).saturating_sub(w));
                let sc: Vec<f64> = (lo..=abs)
                    .map(|j| {
                        let d: f64 = (0..hs)
                            .map(|e| {
                                q[(h * t + i) * hs + e] as f64 * kc[(g * cap + j) * hs + e] as f64
                            })
                            .sum::<f64>()
                            * scale;
                        softcap.map_or(d, |c| (d / c).tanh() * c)
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for e in 0..hs {
                    let want: f64 = (lo..=abs)
                        .zip(&sc)
                        .map(|(j, x)| (x - m).exp() / z * vc[(g * cap + j) * hs + e] as f64)
                        .sum();
                    let got = y[(h * t + i) * hs + e] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "nh {nh} nkv {nkv} t {t} pos {pos} h {h} i {i} e {e}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

mod simd_tests {
    use super::*;
    type F = crate::backend::Flex;

    /// Decoding: the register kernels give the plain loops' bits (group sizes past four heads,
    /// head sizes of one to eight chunks, runs of keys with and without a partial block of
    /// sixteen, windows and soft-capping, a cache larger than its used part).
    #[test]
    fn register_kernels_match_the_plain_loops_bit_for_bit() {
        if !crate::kernels::attention::simd::available() {
            return;
        }
        let mut s = 11u32;
        let mut rnd = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let dev = Default::default();
        for (nh, nkv, hs) in [
            (9, 3, 64),
            (8, 2, 80),
            (4, 1, 128),
            (10, 2, 16),
            (16, 2, 48),
        ] {
            for (t, pos, window, softcap) in [
                (1, 0, None, None),
                (1, 14, None, None),
                (1, 15, None, Some(30.0)),
                (2, 31, None, None),
                (1, 127, Some(50), None),
                (3, 200, None, None),
                (1, 300, Some(140), Some(20.0)),
            ] {
                let cap = pos + t + 5;
                let q: Vec<f32> = (0..nh * t * hs).map(|_| rnd() * 3.0).collect();
                let cache = |scale: f32, rnd: &mut dyn FnMut() -> f32| {
                    let d: Vec<f32> = (0..nkv * cap * hs).map(|_| rnd() * scale).collect();
                    Tensor::<F, 4>::from_data(TensorData::new(d, [1, nkv, cap, hs]), &dev)
                };
                let (kc, vc) = (cache(3.0, &mut rnd), cache(1.0, &mut rnd));
                let (kf, vf) = (
                    crate::backend::flex::prim(&kc),
                    crate::backend::flex::prim(&vc),
                );
                let (k, v) = (strided(&kf).unwrap(), strided(&vf).unwrap());
                let heads = Heads {
                    n_head: nh,
                    n_kv: nkv,
                    head_size: hs,
                    scale: 1.0 / (hs as f64).sqrt(),
                    softcap,
                    window,
                };
                let run = |plain: bool| {
                    use std::sync::atomic::Ordering::Relaxed;
                    crate::kernels::attention::FORCE_PLAIN.store(plain, Relaxed);
                    let mut y = vec![0f32; t * nh * hs];
                    attend(&q, &k, &v, heads, t, pos, &mut y, nh * hs, hs);
                    crate::kernels::attention::FORCE_PLAIN.store(false, Relaxed);
                    y.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(
                    run(false),
                    run(true),
                    "nh {nh} nkv {nkv} hs {hs} t {t} pos {pos}"
                );
            }
        }
    }
}

mod speed {
    use super::*;
    #[test]
    #[ignore]
    fn attend_speed() {
        type F = crate::backend::Flex;
        let (nh, nkv, hs, t) = (9, 3, 64, 128);
        let dev = Default::default();
        let q: Vec<f32> = (0..nh * t * hs).map(|i| (i % 13) as f32 * 0.01).collect();
        let kc = Tensor::<F, 4>::from_data(
            TensorData::new(
                (0..nkv * t * hs)
                    .map(|i| (i % 11) as f32 * 0.01)
                    .collect::<Vec<_>>(),
                [1, nkv, t, hs],
            ),
            &dev,
        );
        let (kt, vt) = (
            crate::backend::flex::prim(&kc),
            crate::backend::flex::prim(&kc),
        );
        let (k, v) = (strided(&kt).unwrap(), strided(&vt).unwrap());
        let heads = Heads {
            n_head: nh,
            n_kv: nkv,
            head_size: hs,
            scale: 0.125,
            softcap: None,
            window: None,
        };
        let mut y = vec![0f32; t * nh * hs];
        let reps = 300;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            attend(&q, &k, &v, heads, t, 0, &mut y, nh * hs, hs);
        }
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "attend t={t}: {:.3} ms/layer, {:.1} ms per 30 layers",
            s * 1e3,
            s * 30e3
        );
        // Decoding one token after `ctx - 1` others: 30 layers' caches (f32), read from memory
        // as in a real decode step.
        for ctx in [64, 256, 1024, 2048] {
            let caches: Vec<Tensor<F, 4>> = (0..30)
                .map(|l| {
                    Tensor::from_data(
                        TensorData::new(
                            (0..nkv * ctx * hs)
                                .map(|i| ((i + l) % 11) as f32 * 0.01)
                                .collect::<Vec<_>>(),
                            [1, nkv, ctx, hs],
                        ),
                        &dev,
                    )
                })
                .collect();
            let flexes: Vec<_> = caches.iter().map(crate::backend::flex::prim).collect();
            let views: Vec<_> = flexes.iter().map(|f| strided(f).unwrap()).collect();
            let q1 = &q[..nh * hs];
            let mut y = vec![0f32; nh * hs];
            let reps = 20;
            // On a pool worker, as in a forward pass; the plain loops and the register kernels
            // in alternating rounds (the same bits), with the caches warm (all 30 layers fit in
            // a large L3) and cold (13 MB of other data read before each layer, as a bf16
            // decode streams its weights between two attentions).
            use std::sync::atomic::Ordering::Relaxed;
            let other = vec![1f32; 13 << 18];
            let mut sink = 0f32;
            let mut times = [[0f64; 2]; 2];
            for round in 0..6 {
                let plain = round % 2 == 0;
                crate::kernels::attention::FORCE_PLAIN.store(plain, Relaxed);
                for (cold, time) in times[plain as usize].iter_mut().enumerate() {
                    *time += <F as crate::backend::ops::ModelOps>::run(|| {
                        let mut spent = 0f64;
                        for _ in 0..reps {
                            for v in &views {
                                if cold == 1 {
                                    sink += other.iter().step_by(16).sum::<f32>();
                                }
                                let t0 = std::time::Instant::now();
                                attend(q1, v, v, heads, 1, ctx - 1, &mut y, nh * hs, hs);
                                spent += t0.elapsed().as_secs_f64();
                            }
                        }
                        spent / reps as f64 / 3.0
                    });
                }
            }
            crate::kernels::attention::FORCE_PLAIN.store(false, Relaxed);
            println!(
                "decode at context {ctx}, ms per 30 layers: warm {:.2} (plain loops {:.2}), \
                 cold {:.2} (plain loops {:.2}) [{sink}]",
                times[0][0] * 1e3,
                times[1][0] * 1e3,
                times[0][1] * 1e3,
                times[1][1] * 1e3,
            );
        }
    }
}
