//! Speed probes of the matrix–vector kernels through the flex seam (ignored tests; `--release`).

use burn::prelude::*;

use crate::backend::flex::linear::try_linear;
use crate::backend::Flex;
use crate::model::precision::held_tensor;
use crate::model::WeightDtype;

/// `(in, out)` of one SmolLM2-135M layer's linears: fused q/k/v, proj, fc_1, fc_2, mlp proj.
pub(crate) const LAYER: [(usize, usize); 5] = [
    (576, 960),
    (576, 576),
    (576, 1536),
    (576, 1536),
    (1536, 576),
];

/// `cargo test --lib dtype_speed -- --ignored --nocapture`: the linears of 30 SmolLM2-135M
/// layers (no head) held in f32 and in bf16, one token each in alternating rounds: the
/// bytes per second each streams and the bf16 / f32 speed ratio of the kernel alone.
#[test]
#[ignore]
fn dtype_speed() {
    let dev = Default::default();
    let shapes = LAYER;
    let model = |p: WeightDtype| -> Vec<(Tensor<Flex, 2>, usize)> {
        (0..30)
            .flat_map(|_| shapes)
            .map(|(k, n)| {
                let w: Vec<f32> = (0..k * n)
                    .map(|i| ((i % 251) as f32 - 125.0) * 1e-3)
                    .collect();
                (held_tensor::<Flex>(w, [k, n], p, &dev), k)
            })
            .collect()
    };
    let (wide, narrow) = (model(WeightDtype::F32), model(WeightDtype::Bf16));
    let xs: Vec<Tensor<Flex, 2>> = [576, 1536]
        .iter()
        .map(|&k| Tensor::from_data(TensorData::new(vec![0.01f32; k], [1, k]), &dev))
        .collect();
    let token = |layers: &[(Tensor<Flex, 2>, usize)]| {
        let t = std::time::Instant::now();
        for (w, k) in layers {
            let x = &xs[usize::from(*k != 576)];
            std::hint::black_box(try_linear(x, w, None, &[]).unwrap());
        }
        t.elapsed().as_secs_f64()
    };
    let (f32_s, bf16_s) = <Flex as crate::backend::ops::ModelOps>::run(|| {
        let (mut a, mut b) = (0.0, 0.0);
        for _ in 0..10 {
            for _ in 0..5 {
                a += token(&wide);
            }
            for _ in 0..5 {
                b += token(&narrow);
            }
        }
        (a / 50.0, b / 50.0)
    });
    let bytes: usize = shapes.iter().map(|(k, n)| k * n * 4 * 30).sum();
    println!(
        "f32 {:.2} ms ({:.1} GB/s), bf16 {:.2} ms ({:.1} GB/s): bf16 / f32 speed {:.2}",
        f32_s * 1e3,
        bytes as f64 / f32_s / 1e9,
        bf16_s * 1e3,
        bytes as f64 / 2.0 / bf16_s / 1e9,
        f32_s / bf16_s
    );
}
