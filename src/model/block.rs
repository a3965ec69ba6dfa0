//! One transformer block: norms, attention and MLP with their residual connections (sequential
//! or parallel, with Gemma 2's post-norms).

use burn::prelude::*;

use super::build::Loader;
use super::{Attention, Mlp, Norm, Rope, RowGrafts};
use crate::backend::ModelBackend;
use crate::cache::KvCache;
use crate::checkpoint::names::Part;
use crate::error::Result;

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block<B: ModelBackend> {
    /// Absent in OLMo-2 (identity).
    pub(crate) norm_1: Option<Norm<B>>,
    pub(crate) attn: Attention<B>,
    /// Absent with `shared_attention_norm` (the MLP reuses `norm_1`'s output) or in OLMo-2
    /// (identity).
    pub(crate) norm_2: Option<Norm<B>>,
    pub(crate) shared_attention_norm: bool,
    pub(crate) mlp: Mlp<B>,
    pub(crate) parallel_residual: bool,
    /// Gemma 2: norms on the attention and MLP outputs.
    pub(crate) post_attention_norm: Option<Norm<B>>,
    pub(crate) post_mlp_norm: Option<Norm<B>>,
}

impl<B: ModelBackend> Block<B> {
    /// Block `i` from `ld` (its norms, attention and MLP, as the config says it has them).
    pub(crate) fn load(ld: &mut Loader<'_, '_, B>, i: usize) -> Result<Self> {
        let cfg = ld.cfg;
        let norm_1 = ld.norm_if(!cfg.extras.no_norm_1, Part::Norm1, i)?;
        let no_norm_2 = cfg.shared_attention_norm || cfg.extras.no_norm_2;
        let norm_2 = ld.norm_if(!no_norm_2, Part::Norm2, i)?;
        let attn = Attention::load(ld, i)?;
        let mlp = Mlp::load(ld, i)?;
        Ok(Self {
            norm_1,
            attn,
            norm_2,
            shared_attention_norm: cfg.shared_attention_norm,
            mlp,
            parallel_residual: cfg.parallel_residual,
            post_attention_norm: ld.norm_if(
                cfg.extras.post_attention_norm,
                Part::PostAttnNorm,
                i,
            )?,
            post_mlp_norm: ld.norm_if(cfg.extras.post_mlp_norm, Part::PostMlpNorm, i)?,
        })
    }

    /// `x`: `[1, t, e]` with one cache or `[n, 1, e]` with `n` (see [`Attention::forward_batch`]).
    pub(super) fn forward(
        &self,
        layer: usize,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        caches: &mut [KvCache<B>],
        rows: Option<RowGrafts<'_>>,
    ) -> Tensor<B, 3> {
        let x_normed = match &self.norm_1 {
            Some(n) => n.forward(x.clone()),
            None => x.clone(),
        };
        let mut attn = self
            .attn
            .forward_batch(layer, x_normed.clone(), rope, caches, rows);
        if let Some(n) = &self.post_attention_norm {
            attn = n.forward(attn);
        }
        let post_mlp = |y: Tensor<B, 3>| match &self.post_mlp_norm {
            Some(n) => n.forward(y),
            None => y,
        };
        if self.parallel_residual {
            let mlp_in = match &self.norm_2 {
                Some(n) => n.forward(x.clone()),
                None if self.shared_attention_norm => x_normed,
                None => x.clone(),
            };
            post_mlp(self.mlp.forward(mlp_in, rows)) + (attn + x)
        } else {
            let x = attn + x;
            let mlp_in = match &self.norm_2 {
                Some(n) => n.forward(x.clone()),
                None => x.clone(),
            };
            post_mlp(self.mlp.forward(mlp_in, rows)) + x
        }
    }
}
