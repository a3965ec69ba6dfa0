//! Causal self-attention with a fused `[Q | K | V]` projection, GQA/MQA, partial rotary, an
//! optional sliding window, and the LLaMA-Adapter prefix hook (a learned prefix attended to with
//! its own softmax, gated per head, added to the output).

use burn::prelude::*;
use burn::tensor::activation::softmax;

use std::sync::Arc;

use super::build::Loader;
use super::linear::{Linear, RowGrafts};
use super::norm::Norm;
use super::rope::Rope;
use crate::backend::ops::{AttentionSpec, Heads};
use crate::backend::reference::scores;
use crate::backend::ModelBackend;
use crate::cache::KvCache;
use crate::checkpoint::names::Part;
use crate::config::LinearId;
use crate::error::Result;

/// The attention of one block.
#[derive(Debug, Clone)]
pub struct Attention<B: ModelBackend> {
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
pub struct Prefix<B: ModelBackend> {
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

impl<B: ModelBackend> Attention<B> {
    /// Block `i`'s attention from `ld`: the fused q/k/v and output projections, the q/k norms
    /// where the config has them, and the heads, window, soft-cap and score scale it says.
    pub(crate) fn load(ld: &mut Loader<'_, '_, B>, i: usize) -> Result<Self> {
        let cfg = ld.cfg;
        let qkv = ld.linear(LinearId::Qkv(i), cfg.qkv_bias)?;
        let proj = ld.linear(LinearId::Proj(i), cfg.attn_out_bias)?;
        let norm_qk = if cfg.norm_qk {
            Some((ld.norm(Part::QNorm, i)?, ld.norm(Part::KNorm, i)?))
        } else {
            None
        };
        let scores_scalar = cfg
            .extras
            .attention_scores_scalar
            .unwrap_or(cfg.head_size as f64);
        Ok(Self {
            qkv,
            proj,
            n_head: cfg.n_head,
            n_kv: cfg.n_query_groups,
            head_size: cfg.head_size,
            window: cfg.window_of(i),
            softcap: cfg.extras.attention_softcap,
            scale: 1.0 / scores_scalar.sqrt(),
            prefix: None,
            norm_qk,
            norm_qk_all_heads: cfg.extras.norm_qk_all_heads,
        })
    }

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
                let work: Vec<_> = caches.iter_mut().zip(rows).collect();
                let ys = B::each(work, |(c, q)| self.attend(layer, q, rope, c));
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
            return B::attend_qkv(qkv, heads, &rope.tables(pos + t), pos, append);
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
        let spec = AttentionSpec {
            scale: self.scale,
            softcap: self.softcap,
            pos,
            window,
        };
        let mut y = B::causal_attention(q.clone(), k, v, spec);
        if let Some(p) = prefix {
            // LitGPT scores the prefix with the same attention function, soft-capping included.
            let ps = scores(q, p.k.clone(), self.scale, self.softcap); // [b, nh, t, prefix]
            y = y + softmax(ps, 3).matmul(p.v.clone()) * p.gate.clone();
        }
        y.swap_dims(1, 2).reshape([b, t, nh * hs])
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
}
