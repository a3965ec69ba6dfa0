//! One model configuration, read from a LitGPT `model_config.yaml` or a Hugging Face `config.json`.
//!
//! The fields follow LitGPT's `Config` (the richest of the two); HF configs are mapped onto it.
//! Anything the model cannot honour is an [`Error::UnsupportedConfig`] naming the field, never
//! silently different output.

mod arch;
mod hf;
mod ids;
mod litgpt;

use std::path::Path;

pub use arch::Arch;
pub use ids::LinearId;

use crate::error::{Error, Result};

/// Normalisation layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `torch.nn.LayerNorm` with weight and bias.
    LayerNorm,
    /// RMSNorm; `unit_offset` scales by `1 + w` (Gemma).
    RmsNorm { unit_offset: bool },
}

/// Feed-forward kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `fc → GELU → proj` (GPT-NeoX, Phi).
    GptNeox,
    /// `proj(silu(fc_1 x) * fc_2 x)` (Llama, Qwen2, Mistral).
    Llama,
    /// `proj(gelu(fc_1 x) * fc_2 x)` (Gemma).
    Gemma,
}

/// RoPE frequency adjustments (LitGPT `rope_adjustments`, HF `rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// All frequencies divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1 style smooth interpolation.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_seq_len: f64,
    },
}

/// Which file format a checkpoint's weights follow (decides the name table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// LitGPT names (`transformer.h.N.attn.qkv.weight`, ...).
    LitGpt,
    /// HF `LlamaForCausalLM`-style names (llama, mistral, qwen2).
    HfLlama,
    /// HF `GPTNeoXForCausalLM`.
    HfGptNeox,
    /// HF `PhiForCausalLM`.
    HfPhi,
    /// HF `Phi3ForCausalLM` (fused `qkv_proj` and `gate_up_proj`).
    HfPhi3,
    /// HF `FalconForCausalLM` (`query_key_value` grouped per K/V head).
    HfFalcon,
}

/// The model configuration every other part of graftlm works from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Model name (LitGPT `name`; for HF the directory name). Drives prompt style and BOS rules.
    pub name: String,
    /// The architecture (decided when the config was read).
    pub arch: Arch,
    /// The layout of the stored tensor names (LitGPT's, or a Hugging Face family's).
    pub family: Family,
    /// Maximum context length.
    pub block_size: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub head_size: usize,
    /// Number of K/V heads (GQA/MQA when smaller than `n_head`).
    pub n_query_groups: usize,
    /// Rows of the embedding and of the output head.
    pub padded_vocab_size: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub mlp: MlpKind,
    pub intermediate_size: usize,
    /// GELU uses the tanh approximation.
    pub gelu_tanh: bool,
    /// Bias on the fused q/k/v projection.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub attn_out_bias: bool,
    /// Bias on the MLP linears.
    pub mlp_bias: bool,
    /// Bias on the output head.
    pub lm_head_bias: bool,
    pub parallel_residual: bool,
    /// Parallel residual where the MLP reuses `norm_1`'s output (Phi).
    pub shared_attention_norm: bool,
    /// Number of leading head dimensions that are rotated.
    pub rope_n_elem: usize,
    pub rope_base: f64,
    pub rope_condense_ratio: usize,
    pub rope_scaling: Option<RopeScaling>,
    /// Multiply embeddings by `sqrt(n_embd)` (Gemma).
    pub scale_embeddings: bool,
    /// The output head shares the embedding matrix (HF `tie_word_embeddings`).
    pub tie_embeddings: bool,
    /// Sliding-window attention on every layer (Mistral, Qwen2 with `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// Per-head norms on queries and keys before RoPE (Qwen3; LitGPT `norm_qk`).
    pub norm_qk: bool,
    /// Gemma-2 extras (all off by default).
    pub extras: Extras,
}

/// Less common architecture features (Gemma 2, OLMo-2).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Extras {
    /// Norm on the attention output before the residual add.
    pub post_attention_norm: bool,
    /// Norm on the MLP output before the residual add.
    pub post_mlp_norm: bool,
    /// `tanh(s / c) · c` on attention scores.
    pub attention_softcap: Option<f64>,
    /// `tanh(l / c) · c` on the output logits.
    pub final_softcap: Option<f64>,
    /// Attention scale is `1/√scalar` instead of `1/√head_size`.
    pub attention_scores_scalar: Option<f64>,
    /// Which layers use the sliding window (`None`: all, when a window is set).
    pub sliding_window_layers: Option<Vec<bool>>,
    /// No norm before attention (LitGPT `norm_1: false`; OLMo-2).
    pub no_norm_1: bool,
    /// No norm before the MLP (LitGPT `norm_2: false`; OLMo-2).
    pub no_norm_2: bool,
    /// q/k norms over all heads at once, before the head split (LitGPT `norm_qk_type: olmo2`).
    pub norm_qk_all_heads: bool,
}

impl ModelConfig {
    /// Whether layer `i` uses the sliding window.
    pub fn window_of(&self, i: usize) -> Option<usize> {
        match &self.extras.sliding_window_layers {
            Some(l) if !l.get(i).copied().unwrap_or(false) => None,
            _ => self.sliding_window,
        }
    }
}

impl ModelConfig {
    /// Reads the configuration of a checkpoint directory: `model_config.yaml` (LitGPT) takes
    /// precedence over `config.json` (Hugging Face).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let lit = dir.join("model_config.yaml");
        let hf = dir.join("config.json");
        // Anything there counts as present (`exists`, not `is_file`), so that a FIFO or a
        // directory in its place is refused by name rather than reported missing.
        if lit.exists() {
            Self::from_litgpt_yaml(&lit)
        } else if hf.exists() {
            Self::from_hf_json(&hf)
        } else if !dir.exists() {
            Err(Error::NotFound {
                path: dir.to_path_buf(),
                what: "checkpoint directory".into(),
            })
        } else {
            Err(Error::NotFound {
                path: dir.to_path_buf(),
                what: "neither model_config.yaml (LitGPT) nor config.json (Hugging Face)".into(),
            })
        }
    }

    /// Reads a LitGPT `model_config.yaml`.
    pub fn from_litgpt_yaml(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        let cfg = litgpt::parse(&text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        let default_name = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cfg = hf::parse(&text, path, &default_name)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The architecture in words (`Llama`, `GPT-NeoX`, `Gemma 2`, ...): [`Arch::name`].
    pub fn family_name(&self) -> &'static str {
        self.arch.name()
    }

    /// Every feature that differs from a plain pre-norm multi-head transformer, in words.
    pub fn features(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.n_query_groups == 1 && self.n_head > 1 {
            f.push("multi-query attention".to_string());
        } else if self.n_query_groups < self.n_head {
            f.push(format!(
                "grouped-query attention ({} kv heads)",
                self.n_query_groups
            ));
        }
        if self.head_size * self.n_head != self.n_embd {
            f.push(format!("head size {} ≠ n_embd / n_head", self.head_size));
        }
        if self.rope_n_elem < self.head_size {
            f.push(format!(
                "partial rotary ({} of {} dims)",
                self.rope_n_elem, self.head_size
            ));
        }
        match &self.rope_scaling {
            Some(RopeScaling::Llama3 { factor, .. }) => {
                f.push(format!("Llama-3 RoPE scaling ×{factor}"))
            }
            Some(RopeScaling::Linear { factor }) => {
                f.push(format!("linear RoPE scaling ×{factor}"))
            }
            None => {}
        }
        if self.parallel_residual {
            f.push("parallel residual".into());
        }
        if self.shared_attention_norm {
            f.push("shared attention norm".into());
        }
        if let NormKind::RmsNorm { unit_offset: true } = self.norm {
            f.push("unit-offset RMSNorm".into());
        }
        if self.qkv_bias {
            f.push("q/k/v bias".into());
        }
        if self.lm_head_bias {
            f.push("lm_head bias".into());
        }
        if self.gelu_tanh {
            f.push("tanh GELU".into());
        }
        if self.scale_embeddings {
            f.push("scaled embeddings".into());
        }
        if self.tie_embeddings {
            f.push("tied embeddings".into());
        }
        if self.norm_qk && self.extras.norm_qk_all_heads {
            f.push("q/k norms over all heads".into());
        } else if self.norm_qk {
            f.push("per-head q/k norms".into());
        }
        if self.extras.no_norm_1 || self.extras.no_norm_2 {
            f.push("no pre-attention/pre-MLP norms".into());
        }
        if let Some(w) = self.sliding_window {
            match &self.extras.sliding_window_layers {
                Some(l) => f.push(format!(
                    "sliding window {w} on layers {:?}",
                    l.iter()
                        .enumerate()
                        .filter(|(_, on)| **on)
                        .map(|(i, _)| i)
                        .collect::<Vec<_>>()
                )),
                None => f.push(format!("sliding window {w}")),
            }
        }
        if self.extras.post_attention_norm || self.extras.post_mlp_norm {
            f.push("post-attention/post-MLP norms".into());
        }
        if let Some(c) = self.extras.attention_softcap {
            f.push(format!("attention soft-capping {c}"));
        }
        if let Some(c) = self.extras.final_softcap {
            f.push(format!("logit soft-capping {c}"));
        }
        if let Some(s) = self.extras.attention_scores_scalar {
            f.push(format!("attention scale 1/√{s}"));
        }
        f
    }

    /// Width of the fused q/k/v projection output.
    pub fn qkv_size(&self) -> usize {
        (self.n_head + 2 * self.n_query_groups) * self.head_size
    }

    /// Number of parameters (weights and biases) the model holds.
    pub fn parameter_count(&self) -> usize {
        let e = self.n_embd;
        let norm = |n: usize| match self.norm {
            NormKind::LayerNorm => 2 * n,
            NormKind::RmsNorm { .. } => n,
        };
        let lin = |i: usize, o: usize, b: bool| i * o + if b { o } else { 0 };
        let attn = lin(e, self.qkv_size(), self.qkv_bias)
            + lin(self.n_head * self.head_size, e, self.attn_out_bias);
        let mlp = match self.mlp {
            MlpKind::GptNeox => {
                lin(e, self.intermediate_size, self.mlp_bias)
                    + lin(self.intermediate_size, e, self.mlp_bias)
            }
            MlpKind::Llama | MlpKind::Gemma => {
                2 * lin(e, self.intermediate_size, self.mlp_bias)
                    + lin(self.intermediate_size, e, self.mlp_bias)
            }
        };
        let norms = norm(e) * if self.shared_attention_norm { 1 } else { 2 }
            + norm(e)
                * (self.extras.post_attention_norm as usize + self.extras.post_mlp_norm as usize)
            + if self.norm_qk {
                2 * norm(self.head_size)
            } else {
                0
            };
        let block = attn + mlp + norms;
        let head = if self.tie_embeddings {
            if self.lm_head_bias {
                self.padded_vocab_size
            } else {
                0
            }
        } else {
            lin(e, self.padded_vocab_size, self.lm_head_bias)
        };
        self.padded_vocab_size * e + self.n_layer * block + norm(e) + head
    }

    /// Checks that the values can be built and run (every size positive and plausible, the
    /// heads divisible into groups, RoPE and norm settings usable); errors name `path`.
    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::UnsupportedConfig {
                path: path.to_path_buf(),
                field: field.to_string(),
                msg,
            })
        };
        for (field, v) in [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_head", self.n_head),
            ("head_size", self.head_size),
            ("n_query_groups", self.n_query_groups),
            ("padded_vocab_size", self.padded_vocab_size),
            ("block_size", self.block_size),
            ("intermediate_size", self.intermediate_size),
        ] {
            if v == 0 {
                return bad(field, "must be greater than 0".into());
            }
            if v > 1 << 24 {
                return bad(field, format!("{v} is implausibly large"));
            }
        }
        if !self.n_head.is_multiple_of(self.n_query_groups) {
            return bad(
                "n_query_groups",
                format!(
                    "n_head ({}) must be a multiple of n_query_groups ({})",
                    self.n_head, self.n_query_groups
                ),
            );
        }
        if self.rope_n_elem > self.head_size {
            return bad(
                "rotary_percentage",
                format!(
                    "rotates {} dimensions of a {}-wide head",
                    self.rope_n_elem, self.head_size
                ),
            );
        }
        if !self.rope_n_elem.is_multiple_of(2) {
            return bad(
                "rotary_percentage",
                format!(
                    "the number of rotated dimensions ({}) must be even",
                    self.rope_n_elem
                ),
            );
        }
        if self.rope_condense_ratio == 0 {
            return bad("rope_condense_ratio", "must be at least 1".into());
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad(
                "norm_eps",
                format!("{} is not a valid epsilon", self.norm_eps),
            );
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            return bad(
                "rope_base",
                format!("{} is not a valid base", self.rope_base),
            );
        }
        if self.shared_attention_norm && !self.parallel_residual {
            return bad(
                "shared_attention_norm",
                "needs parallel_residual (LitGPT refuses this combination too)".into(),
            );
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window_size", "must be at least 1".into());
        }
        Ok(())
    }
}

fn read_to_string(path: &Path) -> Result<String> {
    crate::file::read_to_string(path)
}
