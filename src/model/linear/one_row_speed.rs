//! Speed probes of the one-row path (ignored tests; `--release`).

use burn::prelude::*;

use super::one_row_tests::{layer, layer_as};
use super::rows_speed::LAYER;
use crate::backend::Flex;
use crate::model::{Linear, WeightDtype};

/// `cargo test --release --features flex --lib overhead_speed -- --ignored --nocapture`: the
/// cost of a linear call beyond its bytes — 150 weights of 576 × 1536 against 15 of
/// 576 × 15360 (the same bytes; the wide ones are large enough for huge pages), alternating,
/// on the pool and on one thread (measurements: benches/RESULTS.md).
#[test]
#[ignore]
fn overhead_speed() {
    let dev = Default::default();
    for p in [WeightDtype::Bf16, WeightDtype::F32] {
        // 150 linears of 576 x 1536 vs 15 of 576 x 15360: the same bytes.
        let many: Vec<Linear<Flex>> = (0..150).map(|i| layer(1536, 576, p, i, &[])).collect();
        let few: Vec<Linear<Flex>> = (0..15).map(|i| layer(15360, 576, p, i, &[])).collect();
        let x = Tensor::<Flex, 2>::from_data(
            TensorData::new(super::one_row_tests::values(576, 1), [1, 576]),
            &dev,
        );
        let token = |ls: &[Linear<Flex>]| {
            let t = std::time::Instant::now();
            for l in ls {
                std::hint::black_box(Linear::one_row_group(&[l], &x).unwrap());
            }
            t.elapsed().as_secs_f64()
        };
        let run = || {
            let (mut a, mut b) = (0.0, 0.0);
            for _ in 0..20 {
                for _ in 0..3 {
                    a += token(&many);
                }
                for _ in 0..3 {
                    b += token(&few);
                }
            }
            (a / 60.0, b / 60.0)
        };
        let bytes = 150.0 * 576.0 * 1536.0 * if p == WeightDtype::F32 { 4.0 } else { 2.0 };
        let (a, b) = <Flex as crate::backend::ops::ModelOps>::run(run);
        println!(
            "{p:?}: 150 linears {:.2} ms ({:.1} GB/s), 15 wide {:.2} ms ({:.1} GB/s)",
            a * 1e3,
            bytes / a / 1e9,
            b * 1e3,
            bytes / b / 1e9
        );
        let (a, b) = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        println!(
            "{p:?} one thread: 150 linears {:.2} ms ({:.1} GB/s), 15 wide {:.2} ms ({:.1} GB/s)",
            a * 1e3,
            bytes / a / 1e9,
            b * 1e3,
            bytes / b / 1e9
        );
    }
}

/// `cargo test --release --features flex --lib pair_speed -- --ignored --nocapture`: the gate
/// and up projections of 30 SmolLM2-135M-shaped layers for one row, each layer alone (two
/// parallel passes) against both in one group, alternating; f32 and bf16, without and with
/// a rank-16 term on each.
#[test]
#[ignore]
fn pair_speed() {
    let dev = Default::default();
    for p in [WeightDtype::F32, WeightDtype::Bf16] {
        for ranks in [&[][..], &[16][..]] {
            let pairs: Vec<(Linear<Flex>, Linear<Flex>)> = (0..30)
                .map(|i| {
                    (
                        layer(1536, 576, p, 7 * i, ranks),
                        layer(1536, 576, p, 7 * i + 3, ranks),
                    )
                })
                .collect();
            let x = Tensor::<Flex, 2>::from_data(
                TensorData::new(super::one_row_tests::values(576, 1), [1, 576]),
                &dev,
            );
            let x3 = x.clone().reshape([1, 1, 576]);
            let token = |group: bool| {
                let t = std::time::Instant::now();
                for (a, b) in &pairs {
                    if group {
                        std::hint::black_box(Linear::one_row_group(&[a, b], &x).unwrap());
                    } else {
                        std::hint::black_box(a.forward(x3.clone()));
                        std::hint::black_box(b.forward(x3.clone()));
                    }
                }
                t.elapsed().as_secs_f64()
            };
            let (alone, group) = <Flex as crate::backend::ops::ModelOps>::run(|| {
                let (mut alone, mut group) = (0.0, 0.0);
                for _ in 0..20 {
                    for _ in 0..5 {
                        alone += token(false);
                    }
                    for _ in 0..5 {
                        group += token(true);
                    }
                }
                (alone, group)
            });
            println!(
                "{p:?} ranks {ranks:?}: alone {:.3} ms, group {:.3} ms per 30 pairs: {:.3}",
                alone * 10.0,
                group * 10.0,
                alone / group
            );
        }
    }
}

/// `cargo test --release --features flex --lib lora_speed -- --ignored --nocapture`: one
/// decoded token through the linears of 30 SmolLM2-135M-shaped layers as the model runs
/// them (gate and up as one group), held as panels, with a rank-16 LoRA term on each (48 on
/// the fused q/k/v) switched off and on, alternating; f32 and bf16 (factors in the weight's
/// dtype, as a model loaded with `--weight-dtype` holds them). The printed ratio, LoRA's speed
/// over plain's, is what keeping the adapter separate costs; the target is at least 0.9
/// (measurements: benches/RESULTS.md).
#[test]
#[ignore]
fn lora_speed() {
    let dev = Default::default();
    for p in [WeightDtype::Bf16, WeightDtype::F32] {
        // q/k/v (rank 16 each: 48), attention out, gate, up, down; gate and up run as a group.
        let mut layers: Vec<Vec<Linear<Flex>>> = (0..30)
            .map(|i| {
                let seed = |j: usize| 10 * i + j as u32;
                LAYER
                    .iter()
                    .enumerate()
                    .map(|(j, &(k, n))| {
                        let r = if j == 0 { 48 } else { 16 };
                        layer_as(n, k, p, seed(j), &[r], true)
                    })
                    .collect()
            })
            .collect();
        let xs: Vec<Tensor<Flex, 2>> = [576, 1536]
            .iter()
            .map(|&k| {
                Tensor::from_data(
                    TensorData::new(super::one_row_tests::values(k, 1), [1, k]),
                    &dev,
                )
            })
            .collect();
        let token = |layers: &[Vec<Linear<Flex>>]| {
            let t = std::time::Instant::now();
            for l in layers {
                std::hint::black_box(Linear::one_row_group(&[&l[0]], &xs[0]).unwrap());
                std::hint::black_box(Linear::one_row_group(&[&l[1]], &xs[0]).unwrap());
                std::hint::black_box(Linear::one_row_group(&[&l[2], &l[3]], &xs[0]).unwrap());
                std::hint::black_box(Linear::one_row_group(&[&l[4]], &xs[1]).unwrap());
            }
            t.elapsed().as_secs_f64()
        };
        let switch = |layers: &mut [Vec<Linear<Flex>>], on: bool| {
            for l in layers.iter_mut().flatten() {
                l.update_mut("a0").unwrap().active = on;
            }
        };
        let mut t = [0f64; 2];
        for _ in 0..10 {
            for (v, t) in t.iter_mut().enumerate() {
                switch(&mut layers, v == 1);
                *t += <Flex as crate::backend::ops::ModelOps>::run(|| {
                    (0..5).map(|_| token(&layers)).sum::<f64>()
                });
            }
        }
        println!(
            "{p:?}: plain {:.1} tok/s, LoRA separate {:.1}: {:.3}",
            50.0 / t[0],
            50.0 / t[1],
            t[0] / t[1]
        );
    }
}
