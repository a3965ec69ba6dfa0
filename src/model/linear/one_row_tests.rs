//! Tests of the one-row path of [`crate::model::Linear`] (its host kernel in
//! [`crate::kernels::linear::decode`]) against the burn path, per dtype and term count, and the
//! seeded layers that the other linear and MLP tests build.

use burn::prelude::*;

use crate::backend::Flex;
use crate::checkpoint::HostTensor;
use crate::model::update::LowRank;
use crate::model::{Linear, WeightDtype};

pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

pub(crate) fn layer(
    out: usize,
    k: usize,
    p: WeightDtype,
    seed: u32,
    ranks: &[usize],
) -> Linear<Flex> {
    layer_as(out, k, p, seed, ranks, false)
}

/// [`layer`], with its factors held in the weight's dtype when `round` (as a model loaded
/// with an explicit weight dtype holds them) rather than in f32 (their random values are
/// not exact in 16 bits).
pub(crate) fn layer_as(
    out: usize,
    k: usize,
    p: WeightDtype,
    seed: u32,
    ranks: &[usize],
    round: bool,
) -> Linear<Flex> {
    let dev = Default::default();
    let w = HostTensor {
        shape: vec![out, k],
        data: values(out * k, seed),
    };
    let b = HostTensor {
        shape: vec![out],
        data: values(out, seed + 1),
    };
    let mut l = Linear::<Flex>::from_host(&w, Some(&b), p, &dev).unwrap();
    l.set_round_merges(round);
    for (i, &r) in ranks.iter().enumerate() {
        let s = seed + 10 * (i as u32 + 1);
        l.push_update(LowRank {
            name: format!("a{i}").into(),
            a: Tensor::from_data(TensorData::new(values(k * r, s), [k, r]), &dev),
            b: Tensor::from_data(TensorData::new(values(r * out, s + 1), [r, out]), &dev),
            scale: 0.5 + i as f32,
            active: i != 1, // the second update is attached but switched off
            merged: false,
        });
    }
    l
}

/// Two layers run as a group give, bit for bit, what each gives alone — with biases, active
/// and inactive low-rank terms, widths that are not whole tiles or panels, f32 and bf16, on
/// one thread and on the pool.
#[test]
fn a_group_gives_each_layers_own_output() {
    for p in [WeightDtype::F32, WeightDtype::Bf16] {
        let (k, n1, n2) = (72, 200, 37);
        let a = layer(n1, k, p, 1, &[8, 4, 16]);
        let b = layer(n2, k, p, 2, &[]);
        let dev = Default::default();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(values(k, 3), [1, k]), &dev);
        let bits = |t: Tensor<Flex, 3>| -> Vec<u32> {
            let v = t.into_data().into_vec::<f32>().unwrap();
            v.iter().map(|v| v.to_bits()).collect()
        };
        let alone: Vec<u32> = [&a, &b]
            .iter()
            .flat_map(|l| bits(l.forward(x.clone().reshape([1, 1, k]))))
            .collect();
        let on_pool = <Flex as crate::backend::ops::ModelOps>::run(|| {
            Linear::one_row_group(&[&a, &b], &x).unwrap()
        });
        let serial = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Linear::one_row_group(&[&a, &b], &x).unwrap());
        for got in [on_pool, serial] {
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, alone, "{p:?}");
        }
    }
}

/// One row through linears with low-rank terms (their first term's `x·A` computed in the
/// weight pass and shared among the tiles) gives the bits of the several-row path, which
/// computes every `x·A` apart: ranks below, at and above one group of 16, above what one
/// pass takes (64) and split among threads; f32 and bf16 weights, factors in f32 and in
/// the weight's dtype; on the pool and on one thread. With AVX-512 the shares must also be
/// computed in the weight pass (published), not only after it.
#[test]
fn shared_x_a_gives_the_several_row_bits() {
    use std::sync::atomic::Ordering;
    let dev = Default::default();
    let published = crate::kernels::linear::decode::share::PUBLISHED.load(Ordering::Relaxed);
    for (p, round) in [
        (WeightDtype::F32, false),
        (WeightDtype::Bf16, false),
        (WeightDtype::Bf16, true),
    ] {
        for (i, ranks) in [&[8, 4, 16][..], &[48], &[70, 16], &[130]]
            .iter()
            .enumerate()
        {
            let (k, n) = (72, 300);
            let l = layer_as(n, k, p, 20 + i as u32, ranks, round);
            let row = values(k, 9);
            let x = Tensor::<Flex, 2>::from_data(TensorData::new(row.clone(), [1, k]), &dev);
            let two = [row.clone(), row].concat();
            let x2 = Tensor::<Flex, 3>::from_data(TensorData::new(two, [1, 2, k]), &dev);
            let want: Vec<u32> = l.forward(x2).into_data().into_vec::<f32>().unwrap()[..n]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let on_pool = <Flex as crate::backend::ops::ModelOps>::run(|| {
                Linear::one_row_group(&[&l], &x).unwrap()
            });
            let serial = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| Linear::one_row_group(&[&l], &x).unwrap());
            for got in [on_pool, serial] {
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{p:?} round {round} ranks {ranks:?}");
            }
        }
    }
    if crate::kernels::panels::in_pass() {
        assert!(
            crate::kernels::linear::decode::share::PUBLISHED.load(Ordering::Relaxed) > published
        );
    }
}

/// A group refuses a layer whose LLaMA-Adapter correction is live (it is applied outside
/// the kernels), and takes it once the correction is folded into the weight.
#[test]
fn a_live_affine_correction_is_left_to_the_caller() {
    let mut a = layer(40, 24, WeightDtype::F32, 5, &[]);
    let dev = Default::default();
    let x = Tensor::<Flex, 2>::from_data(TensorData::new(values(24, 6), [1, 24]), &dev);
    a.set_affine("v2".into(), vec![1.5; 40], vec![0.25; 40]);
    assert!(Linear::one_row_group(&[&a], &x).is_none());
    a.set_affine_merged(true);
    let got = Linear::one_row_group(&[&a], &x).unwrap();
    let want = a.forward(x.clone().reshape([1, 1, 24]));
    assert_eq!(got, want.into_data().into_vec::<f32>().unwrap());
}
