//! Causal self-attention with a fused `[Q | K | V]` projection, GQA/MQA, partial rotary, an
//! optional sliding window, and the LLaMA-Adapter prefix hook (a learned prefix attended to with
//! its own softmax, gated per head, added to the output).

use burn::prelude::*;
use burn::tensor::activation::softmax;

use std::sync::Arc;

use super::linear::{Linear, RowGrafts};
use super::norm::Norm;
use super::rope::Rope;
use crate::backend::flex::attention::{try_attend, try_attention, Heads};
use crate::cache::KvCache;

/// The attention of one block.
#[derive(Debug, Clone)]
pub struct Attention<B: Backend> {
    pub(crate) qkv: Linear<B>,
    pub(crate) proj: Linear<B>,
    pub(crate) n_head: usize,
    pub(crate) n_kv: usize,
    pub(crate) head_size: usize,
    pub(crate) window: Option<usize>,
    /// Gemma 2: `tanh(s / c) · c` on the scores.
    pub(crate) softcap: Option<f64>,
    /// Score scale (`1/√head_size` unless the config says otherwise).
    pub(crate) scale: f64,
    pub(crate) prefix: Option<Prefix<B>>,
    /// Query and key norms, applied before RoPE: per head (Qwen3) or over all heads (OLMo-2).
    pub(crate) norm_qk: Option<(Norm<B>, Norm<B>)>,
    pub(crate) norm_qk_all_heads: bool,
}

/// A learned attention prefix (LLaMA-Adapter): keys and values without RoPE, and a gate per head.
#[derive(Debug, Clone)]
pub struct Prefix<B: Backend> {
    /// The adapter it belongs to.
    pub name: Arc<str>,
    /// `[1, n_head, prefix_len, head_size]`.
    pub k: Tensor<B, 4>,
    /// `[1, n_head, prefix_len, head_size]`.
    pub v: Tensor<B, 4>,
    /// `[1, n_head, 1, 1]`.
    pub gate: Tensor<B, 4>,
    pub active: bool,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[1, t, n_embd]` for positions `cache.len()..cache.len() + t`.
    pub fn forward(
        &self,
        layer: usize,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        self.forward_batch(layer, x, rope, std::slice::from_mut(cache), None)
    }

    /// `x`: `[1, t, n_embd]` with one cache, or `[n, 1, n_embd]` — one new token for each of `n`
    /// sequences, each with its own cache (the projections read their weights once for all). `rows`
    /// picks per-row updates in the projections (see [`Linear::forward_rows`]).
    pub fn forward_batch(
        &self,
        layer: usize,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        caches: &mut [KvCache<B>],
        rows: Option<RowGrafts<'_>>,
    ) -> Tensor<B, 3> {
        let qkv = self.qkv.forward_rows(x, rows);
        let y = match caches {
            [cache] => self.attend(layer, qkv, rope, cache),
            _ => {
                // Each sequence attends over its own cache; they are independent, so they run
                // side by side (the per-row work is many small ops, not one big one).
                let rows: Vec<Tensor<B, 3>> = (0..caches.len())
                    .map(|r| qkv.clone().narrow(0, r, 1))
                    .collect();
                #[cfg(feature = "flex")]
                let ys: Vec<Tensor<B, 3>> = {
                    use rayon::prelude::*;
                    caches
                        .par_iter_mut()
                        .zip(rows)
                        .map(|(c, q)| self.attend(layer, q, rope, c))
                        .collect()
                };
                #[cfg(not(feature = "flex"))]
                let ys: Vec<Tensor<B, 3>> = caches
                    .iter_mut()
                    .zip(rows)
                    .map(|(c, q)| self.attend(layer, q, rope, c))
                    .collect();
                Tensor::cat(ys, 0)
            }
        };
        self.proj.forward_rows(y, rows)
    }

    /// Attention of one sequence from its fused projection `[1, t, (nh + 2·nkv)·hs]`: the heads'
    /// outputs `[1, t, nh·hs]` (before the output projection).
    fn attend(
        &self,
        layer: usize,
        qkv: Tensor<B, 3>,
        rope: &Rope<B>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = qkv.dims();
        let (nh, nkv, hs) = (self.n_head, self.n_kv, self.head_size);
        let pos = cache.len();
        let window = self.window.filter(|&w| w < pos + t);
        let prefix = self.prefix.as_ref().filter(|p| p.active);
        if self.norm_qk.is_none() && prefix.is_none() {
            let heads = Heads {
                n_head: nh,
                n_kv: nkv,
                head_size: hs,
                scale: self.scale,
                softcap: self.softcap,
                window,
            };
            let append = |k, v| cache.append(layer, k, v);
            if let Some(y) = try_attend(&qkv, heads, rope.tables(pos + t), pos, append) {
                return y;
            }
        }
        let mut q = qkv.clone().narrow(2, 0, nh * hs);
        let mut k = qkv.clone().narrow(2, nh * hs, nkv * hs);
        let v = qkv.narrow(2, (nh + nkv) * hs, nkv * hs);
        if let (Some((nq, nk)), true) = (&self.norm_qk, self.norm_qk_all_heads) {
            q = nq.forward(q);
            k = nk.forward(k);
        }
        // [b, t, heads, hs] -> [b, heads, t, hs]
        let q = q.reshape([b, t, nh, hs]).swap_dims(1, 2);
        let k = k.reshape([b, t, nkv, hs]).swap_dims(1, 2);
        let v = v.reshape([b, t, nkv, hs]).swap_dims(1, 2);
        let (q, k) = match self.norm_qk.as_ref().filter(|_| !self.norm_qk_all_heads) {
            Some((nq, nk)) => {
                let per_head = |n: &Norm<B>, x: Tensor<B, 4>| {
                    let [b, h, t, d] = x.dims();
                    n.forward(x.reshape([b * h, t, d])).reshape([b, h, t, d])
                };
                (per_head(nq, q), per_head(nk, k))
            }
            None => (q, k),
        };
        let q = rope.apply(q, pos);
        let k = rope.apply(k, pos);
        let (k, v) = cache.append(layer, k, v);
        let mut y = match try_attention(&q, &k, &v, self.scale, self.softcap, pos, window) {
            Some(y) => y,
            None => self.burn_attention(q.clone(), k, v, pos),
        };
        if let Some(p) = prefix {
            // LitGPT scores the prefix with the same attention function, soft-capping included.
            let ps = self.scores(q, p.k.clone()); // [b, nh, t, prefix]
            y = y + softmax(ps, 3).matmul(p.v.clone()) * p.gate.clone();
        }
        y.swap_dims(1, 2).reshape([b, t, nh * hs])
    }

    /// The same attention in burn ops (any backend): grouped-query without copying K/V per
    /// query head.
    fn burn_attention(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        pos: usize,
    ) -> Tensor<B, 4> {
        let [b, nh, t, hs] = q.dims();
        let nkv = self.n_kv;
        // Grouped-query attention without copying K/V per query head: the `rep` query heads that
        // share a K/V head become `rep · t` rows against that head (`[b, nkv, rep·t, hs]`).
        let rep = nh / nkv;
        let qg = if rep > 1 {
            q.clone().reshape([b, nkv, rep * t, hs])
        } else {
            q.clone()
        };
        let mut scores = self.scores(qg, k); // [b, nkv, rep·t, s]
        if let Some(mask) = self.mask(pos, t, &scores.device()) {
            scores = scores
                + if rep > 1 {
                    mask.repeat_dim(2, rep)
                } else {
                    mask
                };
        }
        softmax(scores, 3).matmul(v).reshape([b, nh, t, hs])
    }

    /// Scaled (and, for Gemma 2, soft-capped) scores `q·kᵀ`.
    fn scores(&self, q: Tensor<B, 4>, k: Tensor<B, 4>) -> Tensor<B, 4> {
        let s = q.matmul(k.swap_dims(2, 3)) * self.scale;
        match self.softcap {
            Some(c) => (s / c).tanh() * c,
            None => s,
        }
    }

    /// Installs or removes the prefix.
    pub fn set_prefix(&mut self, prefix: Option<Prefix<B>>) {
        self.prefix = prefix;
    }

    /// The installed prefix.
    pub fn prefix_mut(&mut self) -> Option<&mut Prefix<B>> {
        self.prefix.as_mut()
    }

    /// The fused q/k/v projection.
    pub fn qkv(&self) -> &Linear<B> {
        &self.qkv
    }

    /// Additive mask `[1, 1, t, pos + t]` (0 or -inf), or `None` when nothing is masked.
    fn mask(&self, pos: usize, t: usize, device: &B::Device) -> Option<Tensor<B, 4>> {
        let s = pos + t;
        let window = self.window.filter(|&w| w < s);
        if t == 1 && window.is_none() {
            return None;
        }
        let mut m = vec![0f32; t * s];
        for i in 0..t {
            let abs = pos + i;
            for j in 0..s {
                let future = j > abs;
                let too_old = window.is_some_and(|w| j + w <= abs);
                if future || too_old {
                    m[i * s + j] = f32::NEG_INFINITY;
                }
            }
        }
        Some(
            Tensor::<B, 2>::from_data(TensorData::new(m, [t, s]), device)
                .unsqueeze_dims::<4>(&[0, 1]),
        )
    }
}
