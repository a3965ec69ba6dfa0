//! Building a [`Model`] from its parameters, one tensor at a time.

use std::collections::HashMap;

use super::{
    precision, Attention, Block, Embedding, InPlace, Linear, Mlp, Model, Norm, Rope, WeightDtype,
};
use crate::backend::ModelBackend;
use crate::checkpoint::HostTensor;
use crate::config::{MlpKind, ModelConfig};
use crate::error::{Error, Result};

impl<B: ModelBackend> Model<B> {
    /// Builds the model from host tensors named as in LitGPT (see `checkpoint::names::table`).
    pub fn from_tensors(
        config: ModelConfig,
        mut t: HashMap<String, HostTensor>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source(
            config,
            &mut |name: &str| {
                t.remove(name).ok_or_else(|| Error::MissingTensor {
                    path: Default::default(),
                    name: name.to_string(),
                    expected: vec![],
                })
            },
            device,
        )
    }

    /// Builds the model asking `take` for each parameter (LitGPT names) in turn, so a loader can
    /// read one tensor at a time and peak memory stays near the model's own size. Weights are
    /// held as f32 (see [`Model::from_source_as`]).
    pub fn from_source(
        config: ModelConfig,
        take: &mut dyn FnMut(&str) -> Result<HostTensor>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_as(config, take, WeightDtype::F32, device)
    }

    /// [`Model::from_source`] holding the weight matrices (linears and embedding) at `precision`
    /// (`Auto` counts as f32 here: the loader resolves it from the stored dtypes).
    pub fn from_source_as(
        config: ModelConfig,
        take: &mut dyn FnMut(&str) -> Result<HostTensor>,
        precision: WeightDtype,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_tied(
            config,
            take,
            &mut |_, _| Ok(false),
            precision,
            false,
            device,
        )
    }

    /// [`Model::from_source_as`] knowing whether `lm_head.weight` comes from the embedding's own
    /// stored values (a tied checkpoint without a separate head, or a head saved as a view of
    /// the embedding's storage): then the embedding is not read again, nor compared with the
    /// head, and the head's copy serves the lookups.
    ///
    /// `in_place(name, f)` may instead call `f(parts, shape)` with a matrix read in place (from
    /// a mapped file) and return `true`; the linears' weights and an untied embedding are asked
    /// for that way first.
    pub(crate) fn from_source_tied(
        config: ModelConfig,
        mut take: &mut dyn FnMut(&str) -> Result<HostTensor>,
        in_place: &mut InPlace<'_>,
        precision: WeightDtype,
        head_is_embedding: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let precision = match precision {
            WeightDtype::Auto => WeightDtype::F32,
            p => p,
        };
        let cfg = &config;
        let norm = |w: &HostTensor, b: Option<&HostTensor>| {
            Norm::from_host(cfg.norm, w, b, cfg.norm_eps, device)
        };
        let layer_norm = cfg.norm == crate::config::NormKind::LayerNorm;
        let take_norm =
            |take: &mut dyn FnMut(&str) -> Result<HostTensor>, prefix: &str| -> Result<Norm<B>> {
                let w = take(&format!("{prefix}.weight"))?;
                let b = if layer_norm {
                    Some(take(&format!("{prefix}.bias"))?)
                } else {
                    None
                };
                Ok(norm(&w, b.as_ref()))
            };
        let wte_shape = [cfg.padded_vocab_size, cfg.n_embd];
        let mut lent = None;
        if !head_is_embedding && !cfg.tie_embeddings {
            // Untied: the embedding is held as read, lent in place (a 16-bit one is not widened
            // to f32 on the way: for a large vocabulary that copy is the biggest transient).
            in_place("transformer.wte.weight", &mut |parts, shape| {
                if let ([values], true) = (parts, shape == wte_shape) {
                    lent = Some(precision::held_values::<B>(
                        *values, wte_shape, precision, device,
                    ));
                }
            })?;
        }
        let mut linear = |take: &mut dyn FnMut(&str) -> Result<HostTensor>,
                          prefix: &str,
                          bias: bool|
         -> Result<Linear<B>> {
            let b = if bias {
                Some(take(&format!("{prefix}.bias"))?)
            } else {
                None
            };
            let name = format!("{prefix}.weight");
            let mut made = None;
            let read = in_place(&name, &mut |data, shape| {
                made = Some(Linear::from_values(
                    data,
                    shape,
                    b.as_ref(),
                    precision,
                    device,
                ));
            })?;
            match made {
                Some(l) if read => Ok(l),
                _ => Ok(Linear::from_host(
                    &take(&name)?,
                    b.as_ref(),
                    precision,
                    device,
                )),
            }
        };

        // The head, then (unless lent above, untied) the embedding: with tied embeddings they are
        // normally the same matrix, and the head's (transposed) copy then serves the lookups too
        // — one copy held, not two. (Before the blocks, and one f32 copy at a time, so the
        // transient copies stay below the final size; the comparison reads the head as held.)
        let lm_head = linear(&mut take, "lm_head", cfg.lm_head_bias)?;
        let head_shape = {
            let (inp, out) = (lm_head.in_features(), lm_head.out_features());
            vec![out, inp]
        };
        let wte = if head_is_embedding {
            None
        } else if lent.is_some() {
            lent.map(Embedding::Own)
        } else {
            let wte_h = take("transformer.wte.weight")?;
            let same_as_head = cfg.tie_embeddings && wte_h.shape == head_shape && {
                let (held, shape) = lm_head.held_weight();
                precision::equals_transposed(held, shape, &wte_h.data, precision)
            };
            (!same_as_head).then(|| {
                Embedding::Own(precision::held_tensor::<B>(
                    wte_h.data, wte_shape, precision, device,
                ))
            })
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("transformer.h.{i}");
            let norm_1 = if cfg.extras.no_norm_1 {
                None
            } else {
                Some(take_norm(&mut take, &format!("{p}.norm_1"))?)
            };
            let norm_2 = if cfg.shared_attention_norm || cfg.extras.no_norm_2 {
                None
            } else {
                Some(take_norm(&mut take, &format!("{p}.norm_2"))?)
            };
            let attn = Attention {
                qkv: linear(&mut take, &format!("{p}.attn.qkv"), cfg.qkv_bias)?,
                proj: linear(&mut take, &format!("{p}.attn.proj"), cfg.attn_out_bias)?,
                n_head: cfg.n_head,
                n_kv: cfg.n_query_groups,
                head_size: cfg.head_size,
                window: cfg.window_of(i),
                softcap: cfg.extras.attention_softcap,
                scale: 1.0
                    / cfg
                        .extras
                        .attention_scores_scalar
                        .unwrap_or(cfg.head_size as f64)
                        .sqrt(),
                prefix: None,
                norm_qk_all_heads: cfg.extras.norm_qk_all_heads,
                norm_qk: if cfg.norm_qk {
                    Some((
                        take_norm(&mut take, &format!("{p}.attn.norm_q"))?,
                        take_norm(&mut take, &format!("{p}.attn.norm_k"))?,
                    ))
                } else {
                    None
                },
            };
            let mlp = match cfg.mlp {
                MlpKind::GptNeox => Mlp {
                    kind: cfg.mlp,
                    gelu_tanh: cfg.gelu_tanh,
                    fc_1: linear(&mut take, &format!("{p}.mlp.fc"), cfg.mlp_bias)?,
                    fc_2: None,
                    proj: linear(&mut take, &format!("{p}.mlp.proj"), cfg.mlp_bias)?,
                },
                MlpKind::Llama | MlpKind::Gemma => Mlp {
                    kind: cfg.mlp,
                    gelu_tanh: cfg.gelu_tanh,
                    fc_1: linear(&mut take, &format!("{p}.mlp.fc_1"), cfg.mlp_bias)?,
                    fc_2: Some(linear(&mut take, &format!("{p}.mlp.fc_2"), cfg.mlp_bias)?),
                    proj: linear(&mut take, &format!("{p}.mlp.proj"), cfg.mlp_bias)?,
                },
            };
            let post_attention_norm = if cfg.extras.post_attention_norm {
                Some(take_norm(&mut take, &format!("{p}.post_attention_norm"))?)
            } else {
                None
            };
            let post_mlp_norm = if cfg.extras.post_mlp_norm {
                Some(take_norm(&mut take, &format!("{p}.post_mlp_norm"))?)
            } else {
                None
            };
            blocks.push(Block {
                norm_1,
                attn,
                norm_2,
                shared_attention_norm: cfg.shared_attention_norm,
                mlp,
                parallel_residual: cfg.parallel_residual,
                post_attention_norm,
                post_mlp_norm,
            });
        }
        let ln_f = take_norm(&mut take, "transformer.ln_f")?;
        let rope = Rope::new(cfg, cfg.block_size, device);
        Ok(Self {
            config,
            grafts: Vec::new(),
            wte,
            blocks,
            ln_f,
            lm_head,
            rope,
            device: device.clone(),
            precision,
        })
    }
}
