//! THE name table: which stored tensor (or tensors) feed each model parameter, in which layout.
//!
//! Model parameters are named as in LitGPT (`transformer.h.{i}.attn.qkv.weight`, ...) and are
//! stored `[out, in]` like PyTorch. Each format maps onto those names; fused q/k/v always ends up
//! as LitGPT's `[Q | K | V]` row blocks. [`load`] checks that every parameter is present with the
//! right shape and that no stored tensor is left unused.

use crate::config::{MlpKind, ModelConfig, NormKind};
use crate::error::{Error, Result};
pub use layouts::{Layout, Part, LITGPT};

/// Where a parameter comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One stored tensor, same layout.
    One(String),
    /// Separate q, k, v projections stacked by rows into `[Q | K | V]` (HF Llama, Qwen2, Phi).
    QkvConcat([String; 3]),
    /// GPT-NeoX `query_key_value`, stored per group as `[q.., k, v]`; regrouped to `[Q | K | V]`.
    NeoxQkv(String),
    /// A tied output head: the first name if stored, otherwise the second (the embedding).
    Tied(String, String),
    /// Rows `offset..offset + shape[0]` of a stored tensor with `total` rows (Phi-3 `gate_up_proj`).
    Rows(String, usize, usize),
}

/// One model parameter: its name, its `[out, in]` shape and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub source: Source,
}

/// The full table for a configuration: its parameters and where its checkpoint stores them.
pub fn table(cfg: &ModelConfig) -> Result<Vec<Entry>> {
    table_in(cfg, layouts::of(cfg))
}

/// The table of `cfg`'s parameters as stored in `layout` (export writes in another layout than
/// the one it reads). Which parameters exist is the configuration's business; what they are
/// called is the layout's.
pub fn table_in(cfg: &ModelConfig, layout: &Layout) -> Result<Vec<Entry>> {
    let e = cfg.n_embd;
    let q_rows = cfg.n_head * cfg.head_size;
    let kv_rows = cfg.n_query_groups * cfg.head_size;
    let inter = cfg.intermediate_size;
    let mut t = Table {
        cfg,
        layout,
        entries: Vec::new(),
    };

    let wte = t.stored(Part::Embed, 0)?;
    t.push(
        format!("{}.weight", t.ours(Part::Embed, 0)?),
        vec![cfg.padded_vocab_size, e],
        Source::One(format!("{wte}.weight")),
    );
    for i in 0..cfg.n_layer {
        if !cfg.extras.no_norm_1 {
            t.norm(Part::Norm1, i, e)?;
        }
        t.qkv(i, q_rows + 2 * kv_rows)?;
        if cfg.norm_qk {
            // Per head (Qwen3) or over all heads (OLMo-2).
            let (nq, nk) = if cfg.extras.norm_qk_all_heads {
                (q_rows, kv_rows)
            } else {
                (cfg.head_size, cfg.head_size)
            };
            t.norm(Part::QNorm, i, nq)?;
            t.norm(Part::KNorm, i, nk)?;
        }
        t.linear(Part::Proj, i, [e, q_rows], cfg.attn_out_bias)?;
        if !cfg.shared_attention_norm && !cfg.extras.no_norm_2 {
            t.norm(Part::Norm2, i, e)?;
        }
        if cfg.extras.post_attention_norm {
            t.norm(Part::PostAttnNorm, i, e)?;
        }
        if cfg.extras.post_mlp_norm {
            t.norm(Part::PostMlpNorm, i, e)?;
        }
        match cfg.mlp {
            MlpKind::GptNeox => t.linear(Part::Fc, i, [inter, e], cfg.mlp_bias)?,
            MlpKind::Llama | MlpKind::Gemma if layout.has(Part::GateUp) => {
                let fused = t.stored(Part::GateUp, i)?;
                for (k, ours) in [Part::Gate, Part::Up].into_iter().enumerate() {
                    let ours = t.ours(ours, i)?;
                    let rows = |s: &str| Source::Rows(format!("{fused}.{s}"), k * inter, 2 * inter);
                    t.push(format!("{ours}.weight"), vec![inter, e], rows("weight"));
                    if cfg.mlp_bias {
                        t.push(format!("{ours}.bias"), vec![inter], rows("bias"));
                    }
                }
            }
            MlpKind::Llama | MlpKind::Gemma => {
                t.linear(Part::Gate, i, [inter, e], cfg.mlp_bias)?;
                t.linear(Part::Up, i, [inter, e], cfg.mlp_bias)?;
            }
        }
        t.linear(Part::Down, i, [e, inter], cfg.mlp_bias)?;
    }
    t.norm(Part::FinalNorm, 0, e)?;
    let (head, ours_head) = (t.stored(Part::Head, 0)?, t.ours(Part::Head, 0)?);
    let head_src = if cfg.tie_embeddings {
        Source::Tied(format!("{head}.weight"), format!("{wte}.weight"))
    } else {
        Source::One(format!("{head}.weight"))
    };
    t.push(
        format!("{ours_head}.weight"),
        vec![cfg.padded_vocab_size, e],
        head_src,
    );
    if cfg.lm_head_bias {
        t.push(
            format!("{ours_head}.bias"),
            vec![cfg.padded_vocab_size],
            Source::One(format!("{head}.bias")),
        );
    }
    Ok(t.entries)
}

/// The table under construction: internal names from LitGPT's layout, stored ones from `layout`.
struct Table<'a> {
    cfg: &'a ModelConfig,
    layout: &'a Layout,
    entries: Vec<Entry>,
}

impl Table<'_> {
    fn push(&mut self, name: String, shape: Vec<usize>, source: Source) {
        self.entries.push(Entry {
            name,
            shape,
            source,
        });
    }

    fn named(&self, layout: &Layout, part: Part, i: usize) -> Result<String> {
        layout.name(part, i).ok_or_else(|| {
            Error::Unsupported(format!(
                "{} ({}): the {:?} layout has no name for its {part:?} tensors",
                self.cfg.name, self.cfg.arch, layout.family
            ))
        })
    }

    /// The stored name of a part (without `.weight`).
    fn stored(&self, part: Part, i: usize) -> Result<String> {
        self.named(self.layout, part, i)
    }

    /// The internal name of a part (without `.weight`).
    fn ours(&self, part: Part, i: usize) -> Result<String> {
        self.named(&LITGPT, part, i)
    }

    /// A norm's weight (and bias, for LayerNorm) of `n` values.
    fn norm(&mut self, part: Part, i: usize, n: usize) -> Result<()> {
        let bias = self.cfg.norm == NormKind::LayerNorm;
        let (ours, stored) = (self.ours(part, i)?, self.stored(part, i)?);
        self.push(
            format!("{ours}.weight"),
            vec![n],
            Source::One(format!("{stored}.weight")),
        );
        if bias {
            self.push(
                format!("{ours}.bias"),
                vec![n],
                Source::One(format!("{stored}.bias")),
            );
        }
        Ok(())
    }

    /// A linear stored as one tensor: weight `[out, in]` and maybe a bias.
    fn linear(&mut self, part: Part, i: usize, shape: [usize; 2], bias: bool) -> Result<()> {
        let (ours, stored) = (self.ours(part, i)?, self.stored(part, i)?);
        self.push(
            format!("{ours}.weight"),
            shape.to_vec(),
            Source::One(format!("{stored}.weight")),
        );
        if bias {
            self.push(
                format!("{ours}.bias"),
                vec![shape[0]],
                Source::One(format!("{stored}.bias")),
            );
        }
        Ok(())
    }

    /// The fused q/k/v projection of `rows` outputs, from whatever the layout stores.
    fn qkv(&mut self, i: usize, rows: usize) -> Result<()> {
        let ours = self.ours(Part::Qkv, i)?;
        let layout = self.layout;
        let source = |s: &str| -> Result<Source> {
            Ok(if layout.has(Part::Qkv) {
                let n = format!("{}.{s}", self.stored(Part::Qkv, i)?);
                if layout.grouped_qkv {
                    Source::NeoxQkv(n)
                } else {
                    Source::One(n)
                }
            } else {
                let [q, k, v] = [Part::Q, Part::K, Part::V]
                    .map(|p| self.stored(p, i).map(|n| format!("{n}.{s}")));
                Source::QkvConcat([q?, k?, v?])
            })
        };
        let weight = source("weight")?;
        let bias = if self.cfg.qkv_bias {
            Some(source("bias")?)
        } else {
            None
        };
        let e = self.cfg.n_embd;
        self.push(format!("{ours}.weight"), vec![rows, e], weight);
        if let Some(b) = bias {
            self.push(format!("{ours}.bias"), vec![rows], b);
        }
        Ok(())
    }
}

mod hf;
pub mod layouts;
mod read;

pub use hf::{hf_modules, hf_targets, linears, HfTarget};
pub use read::{
    head_is_the_embedding, load, load_check, neox_to_grouped, read_entry, with_entry_in_place,
};

#[cfg(test)]
mod tests;
