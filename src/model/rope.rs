//! Rotary position embedding, LitGPT/HF "rotate-half" pairing (dimension `i` with `i + n/2`),
//! on the first `rope_n_elem` dimensions of each head. Tables are computed in f32 as LitGPT's
//! `build_rope_cache` does.

use burn::prelude::*;

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

/// Precomputed `cos`/`sin` tables, `[positions, rope_n_elem]`.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    n_elem: usize,
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..len`.
    pub fn new(cfg: &ModelConfig, len: usize, device: &B::Device) -> Self {
        let n = cfg.rope_n_elem;
        let theta = inv_freq(cfg);
        let mut cos = Vec::with_capacity(len * n);
        let mut sin = Vec::with_capacity(len * n);
        for p in 0..len {
            let pos = p as f32 / cfg.rope_condense_ratio as f32;
            // LitGPT repeats the frequencies: [θ_0..θ_{n/2}, θ_0..θ_{n/2}].
            for _ in 0..2 {
                for &t in &theta {
                    let a = pos * t;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [len, n]), device),
            sin: Tensor::from_data(TensorData::new(sin, [len, n]), device),
            n_elem: n,
        }
    }

    /// Number of positions the tables cover.
    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Whether the tables are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates `x`: `[b, heads, t, head_size]` holding positions `start..start + t`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let n = self.n_elem;
        if n == 0 {
            return x;
        }
        let [_, _, t, hs] = x.dims();
        let cos = self
            .cos
            .clone()
            .narrow(0, start, t)
            .unsqueeze_dims::<4>(&[0, 1]);
        let sin = self
            .sin
            .clone()
            .narrow(0, start, t)
            .unsqueeze_dims::<4>(&[0, 1]);
        let rot = x.clone().narrow(3, 0, n);
        let x1 = rot.clone().narrow(3, 0, n / 2);
        let x2 = rot.clone().narrow(3, n / 2, n / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let roped = rot * cos + rotated * sin;
        if n == hs {
            roped
        } else {
            Tensor::cat(vec![roped, x.narrow(3, n, hs - n)], 3)
        }
    }
}
