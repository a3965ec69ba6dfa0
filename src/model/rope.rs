//! Rotary position embedding, LitGPT/HF "rotate-half" pairing (dimension `i` with `i + n/2`),
//! on the first `rope_n_elem` dimensions of each head. Tables are computed in f32 as LitGPT's
//! `build_rope_cache` does, for the positions in use: they grow (doubling) as the model reaches
//! further, up to `block_size`, so a model whose config allows millions of positions costs
//! nothing for them until they are used. Each entry is computed on its own, so a grown table
//! holds the same values as one built at full length.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use burn::prelude::*;

use crate::backend::ops::RopeTables;
use crate::backend::ModelBackend;
use crate::config::{ModelConfig, RopeScaling};

/// Inverse frequencies `θ_i` for `i in 0..n_elem/2`, with any frequency adjustment applied.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let n = cfg.rope_n_elem;
    let base = cfg.rope_base as f32;
    let theta: Vec<f32> = (0..n / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / n as f32))
        .collect();
    match &cfg.rope_scaling {
        None => theta,
        Some(RopeScaling::Linear { factor }) => theta.iter().map(|t| t / *factor as f32).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_seq_len,
        }) => theta
            .iter()
            .map(|&t| {
                let wavelen = 2.0 * std::f32::consts::PI / t;
                let ratio = *original_max_seq_len as f32 / wavelen;
                let smooth = ((ratio - *low_freq_factor as f32)
                    / (*high_freq_factor as f32 - *low_freq_factor as f32))
                    .clamp(0.0, 1.0);
                (1.0 - smooth) * (t / *factor as f32) + smooth * t
            })
            .collect(),
    }
}

/// `cos`/`sin` tables, `[positions, rope_n_elem]`, for positions `0..limit` computed as needed.
#[derive(Debug)]
pub struct Rope<B: ModelBackend> {
    tables: RwLock<(Tensor<B, 2>, Tensor<B, 2>)>,
    /// Positions the tables cover (read without the lock on every call).
    len: AtomicUsize,
    theta: Vec<f32>,
    condense: f32,
    n_elem: usize,
    /// The most positions the tables may cover (the model's `block_size`).
    limit: usize,
    device: B::Device,
}

impl<B: ModelBackend> Clone for Rope<B> {
    fn clone(&self) -> Self {
        Self {
            tables: RwLock::new(self.current()),
            len: AtomicUsize::new(self.len()),
            theta: self.theta.clone(),
            condense: self.condense,
            n_elem: self.n_elem,
            limit: self.limit,
            device: self.device.clone(),
        }
    }
}

/// Positions the tables start with (the rest come as they are reached).
const FIRST: usize = 4096;

impl<B: ModelBackend> Rope<B> {
    /// Tables for positions `0..limit`, computed for the first few thousand now and for the rest
    /// when [`Rope::reach`] asks for them.
    pub fn new(cfg: &ModelConfig, limit: usize, device: &B::Device) -> Self {
        let theta = inv_freq(cfg);
        let condense = cfg.rope_condense_ratio as f32;
        let n = cfg.rope_n_elem;
        let first = limit.min(FIRST);
        let tables = build(&theta, condense, n, 0..first, device);
        Self {
            tables: RwLock::new(tables),
            len: AtomicUsize::new(first),
            theta,
            condense,
            n_elem: n,
            limit,
            device: device.clone(),
        }
    }

    /// Makes the tables cover positions `0..end` (at most the limit): extended to the next
    /// power of two with the new positions only, so growing is rare and costs what it adds.
    pub fn reach(&self, end: usize) {
        if end <= self.len.load(Ordering::Acquire) {
            return;
        }
        let len = end
            .checked_next_power_of_two()
            .unwrap_or(end)
            .min(self.limit);
        let Ok(mut t) = self.tables.write() else {
            return;
        };
        let have = t.0.dims()[0];
        if have >= len {
            return; // another thread grew them meanwhile
        }
        let (cos, sin) = build(
            &self.theta,
            self.condense,
            self.n_elem,
            have..len,
            &self.device,
        );
        *t = (
            Tensor::cat(vec![t.0.clone(), cos], 0),
            Tensor::cat(vec![t.1.clone(), sin], 0),
        );
        self.len.store(len, Ordering::Release);
    }

    /// The tables as they are now (cheap: tensors share their data).
    fn current(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match self.tables.read() {
            Ok(t) => t.clone(),
            // A panic while growing cannot leave a half table: the write is one assignment.
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Number of positions the tables cover now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether the tables are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates `x`: `[b, heads, t, head_size]` holding positions `start..start + t`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        if self.n_elem == 0 {
            return x;
        }
        let t = x.dims()[2];
        B::rope(x, &self.tables(start + t), start)
    }

    /// The `cos` and `sin` tables covering at least positions `0..end`, and `n_elem`.
    pub(crate) fn tables(&self, end: usize) -> RopeTables<B> {
        self.reach(end);
        let (cos, sin) = self.current();
        RopeTables {
            cos,
            sin,
            n: self.n_elem,
        }
    }
}

/// The tables for positions `range`.
fn build<B: ModelBackend>(
    theta: &[f32],
    condense: f32,
    n: usize,
    range: std::ops::Range<usize>,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let len = range.len();
    let mut cos = Vec::with_capacity(len * n);
    let mut sin = Vec::with_capacity(len * n);
    for p in range {
        let pos = p as f32 / condense;
        // LitGPT repeats the frequencies: [θ_0..θ_{n/2}, θ_0..θ_{n/2}].
        for _ in 0..2 {
            for &t in theta {
                let a = pos * t;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [len, n]), device),
        Tensor::from_data(TensorData::new(sin, [len, n]), device),
    )
}

#[cfg(all(test, feature = "flex", feature = "ndarray"))]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// Tables grown on demand (in several steps, past the first few thousand positions) hold
    /// exactly the values of tables built at full length, and never pass the limit.
    #[test]
    fn grown_tables_equal_tables_built_whole() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/models/llama/hf"
        );
        let cfg = ModelConfig::from_dir(std::path::Path::new(dir)).unwrap();
        type F = crate::backend::Flex;
        let dev = Default::default();
        let rope = Rope::<F>::new(&cfg, 9000, &dev);
        assert_eq!(rope.len(), FIRST);
        rope.reach(4100);
        assert_eq!(rope.len(), 8192);
        rope.reach(9000);
        assert_eq!(rope.len(), 9000);
        let theta = inv_freq(&cfg);
        let (cos, sin) = build::<F>(&theta, 1.0, cfg.rope_n_elem, 0..9000, &dev);
        let (gc, gs) = rope.current();
        let v = |t: Tensor<F, 2>| t.into_data().into_vec::<f32>().unwrap();
        assert_eq!(v(gc), v(cos));
        assert_eq!(v(gs), v(sin));
    }

    /// The host path (flex) gives exactly the burn-op path's result (ndarray), partial rotary
    /// included, at any start position.
    #[test]
    fn host_rope_equals_the_burn_ops() {
        for (n_elem, hs) in [(8, 8), (4, 8)] {
            let dir = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/models/llama/hf"
            );
            let cfg = ModelConfig {
                rope_n_elem: n_elem,
                ..ModelConfig::from_dir(std::path::Path::new(dir)).unwrap()
            };
            let (b, h, t) = (1, 3, 5);
            let x: Vec<f32> = (0..b * h * t * hs)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            type F = crate::backend::Flex;
            type N = crate::backend::NdArray;
            let rf = Rope::<F>::new(&cfg, 16, &Default::default());
            let rn = Rope::<N>::new(&cfg, 16, &Default::default());
            for start in [0, 3] {
                let data = || TensorData::new(x.clone(), [b, t, h, hs]);
                // Non-contiguous input, as in attention (`[b, t, h, hs]` with heads swapped in).
                let xf = Tensor::<F, 4>::from_data(data(), &Default::default()).swap_dims(1, 2);
                let xn = Tensor::<N, 4>::from_data(data(), &Default::default()).swap_dims(1, 2);
                assert!(
                    crate::backend::flex::attention::rope(&xf, &rf.tables(start + t), start)
                        .is_some(),
                    "flex takes the host path"
                );
                let yf = rf.apply(xf, start).into_data().into_vec::<f32>().unwrap();
                let yn = rn.apply(xn, start).into_data().into_vec::<f32>().unwrap();
                assert_eq!(yf, yn, "n_elem {n_elem} start {start}");
            }
        }
    }
}
