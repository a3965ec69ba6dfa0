//! The per-architecture tables of stored names (llama.cpp's `LLM_TENSOR_NAMES` in spirit): what
//! each part of the model is called in LitGPT's layout and in each Hugging Face architecture's.
//! Loading (`names::table`), PEFT target matching (`names::hf_targets`) and export all read these
//! tables; nothing else spells a stored tensor's name.

use crate::config::{Arch, Family, ModelConfig};

/// A part of the model a checkpoint stores, whatever a layout calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Token embedding.
    Embed,
    /// Norm after the last block.
    FinalNorm,
    /// Output head.
    Head,
    /// A block's attention input norm.
    Norm1,
    /// A block's MLP input norm.
    Norm2,
    /// A block's norm of the attention output (Gemma 2, OLMo-2).
    PostAttnNorm,
    /// A block's norm of the MLP output (Gemma 2, OLMo-2).
    PostMlpNorm,
    /// Fused query/key/value projection.
    Qkv,
    /// Separate query, key and value projections.
    Q,
    K,
    V,
    /// Query and key norms (Qwen3, OLMo-2).
    QNorm,
    KNorm,
    /// Attention output projection.
    Proj,
    /// GPT-NeoX-style MLP input.
    Fc,
    /// Gated MLP's gate and up projections, stored apart or as one `[gate; up]` tensor (Phi-3).
    Gate,
    Up,
    GateUp,
    /// MLP output projection.
    Down,
}

impl Part {
    /// Whether each block has its own (named under the layer prefix).
    fn per_layer(self) -> bool {
        !matches!(self, Part::Embed | Part::FinalNorm | Part::Head)
    }

    /// The linear modules PEFT can target, in the order a layout lists them.
    pub const LINEARS: [Part; 10] = [
        Part::Qkv,
        Part::Q,
        Part::K,
        Part::V,
        Part::Proj,
        Part::Fc,
        Part::Gate,
        Part::Up,
        Part::GateUp,
        Part::Down,
    ];
}

/// One file layout's names.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The tag `inspect` reports for checkpoints in this layout.
    pub family: Family,
    /// Prefix of block `i`'s names: `{layer}.{i}.`.
    layer: &'static str,
    /// A fused `Qkv` is stored per K/V group as `[q.., k, v]` (GPT-NeoX, Falcon), not `[Q | K | V]`.
    pub grouped_qkv: bool,
    /// Names of the parts this layout stores (without `.weight` / `.bias`).
    parts: &'static [(Part, &'static str)],
    /// A layout whose names this one takes for the parts it does not name itself.
    extends: Option<&'static Layout>,
    /// Endings of stored tensors that hold no weights (rotary caches, attention masks).
    pub ignored: &'static [&'static str],
}

impl Layout {
    /// `base`'s names and settings, with `parts` named as given (a new name, or one more part).
    const fn extend(
        base: &'static Layout,
        family: Family,
        parts: &'static [(Part, &'static str)],
    ) -> Self {
        Layout {
            family,
            parts,
            extends: Some(base),
            ..*base
        }
    }

    /// Blocks named `{layer}.{i}.…`.
    const fn blocks(self, layer: &'static str) -> Self {
        Layout { layer, ..self }
    }

    /// q/k/v fused per K/V group.
    const fn grouped(self) -> Self {
        Layout {
            grouped_qkv: true,
            ..self
        }
    }

    /// The name of `part` relative to its block (or whole, for the others): this layout's, else
    /// the one it extends.
    fn own_name(&self, part: Part) -> Option<&'static str> {
        let mut at = Some(self);
        while let Some(l) = at {
            if let Some((_, n)) = l.parts.iter().find(|(p, _)| *p == part) {
                return Some(n);
            }
            at = l.extends;
        }
        None
    }

    /// Every part this layout names (with those it extends).
    fn named_parts(&self) -> impl Iterator<Item = Part> + '_ {
        std::iter::successors(Some(self), |l| l.extends)
            .flat_map(|l| l.parts.iter().map(|(p, _)| *p))
    }

    /// Whether the layout stores `part`.
    pub fn has(&self, part: Part) -> bool {
        self.own_name(part).is_some()
    }

    /// The stored name of `part` (in block `layer` for per-block parts), without `.weight`.
    pub fn name(&self, part: Part, layer: usize) -> Option<String> {
        let n = self.own_name(part)?;
        Some(if part.per_layer() {
            format!("{}.{layer}.{n}", self.layer)
        } else {
            n.to_string()
        })
    }

    /// The part and block a module path names (`model.layers.3.self_attn.q_proj` → `Q`, 3).
    pub fn part_of(&self, module: &str) -> Option<(Part, Option<usize>)> {
        if let Some(p) = self
            .named_parts()
            .find(|p| !p.per_layer() && self.own_name(*p) == Some(module))
        {
            return Some((p, None));
        }
        let (i, rest) = module
            .strip_prefix(self.layer)?
            .strip_prefix('.')?
            .split_once('.')?;
        if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let i = i.parse().ok()?;
        let p = self
            .named_parts()
            .find(|p| p.per_layer() && self.own_name(*p) == Some(rest))?;
        Some((p, Some(i)))
    }

    /// Module paths of block `i`'s linears, in the layout's order.
    pub fn linears(&self, i: usize) -> impl Iterator<Item = String> + '_ {
        Part::LINEARS
            .into_iter()
            .filter_map(move |p| self.name(p, i))
    }
}

/// The layout of the stored tensors of `cfg`'s checkpoint.
pub fn of(cfg: &ModelConfig) -> &'static Layout {
    if cfg.family == Family::LitGpt {
        &LITGPT
    } else {
        hf(cfg)
    }
}

/// The Hugging Face layout of `cfg`'s architecture (what PEFT adapters name, whichever layout
/// the base itself is stored in).
pub fn hf(cfg: &ModelConfig) -> &'static Layout {
    match cfg.arch {
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma | Arch::StableLm => {
            &LLAMA
        }
        Arch::Gemma2 | Arch::Olmo2 => &POST_NORMED,
        Arch::Phi => &PHI,
        Arch::Phi3 => &PHI3,
        Arch::GptNeox => &GPT_NEOX,
        // Falcon 40B/180B with two norms name them apart; 7B (one shared norm) and sequential
        // Falcon models use the classic names.
        Arch::Falcon if cfg.parallel_residual && !cfg.shared_attention_norm => &FALCON_NEW,
        Arch::Falcon => &FALCON,
    }
}

/// The layout a merged export writes: the architecture's Hugging Face names, unfused (the
/// writer emits one tensor per model parameter, so Phi-3 goes out in Llama's names).
pub fn export(cfg: &ModelConfig) -> &'static Layout {
    match cfg.arch {
        Arch::Phi3 => &LLAMA,
        _ => hf(cfg),
    }
}

/// The internal names: LitGPT's, which checkpoints in LitGPT layout store as they are.
pub static LITGPT: Layout = Layout {
    family: Family::LitGpt,
    layer: "transformer.h",
    grouped_qkv: false,
    parts: &[
        (Part::Embed, "transformer.wte"),
        (Part::FinalNorm, "transformer.ln_f"),
        (Part::Head, "lm_head"),
        (Part::Norm1, "norm_1"),
        (Part::Norm2, "norm_2"),
        (Part::PostAttnNorm, "post_attention_norm"),
        (Part::PostMlpNorm, "post_mlp_norm"),
        (Part::Qkv, "attn.qkv"),
        (Part::QNorm, "attn.norm_q"),
        (Part::KNorm, "attn.norm_k"),
        (Part::Proj, "attn.proj"),
        (Part::Fc, "mlp.fc"),
        (Part::Gate, "mlp.fc_1"),
        (Part::Up, "mlp.fc_2"),
        (Part::Down, "mlp.proj"),
    ],
    extends: None,
    ignored: &[],
};

/// What the Hugging Face layouts below share unless they name a part otherwise (not a layout of
/// its own: it names no linear).
static HF: Layout = Layout {
    family: Family::HfLlama,
    layer: "model.layers",
    grouped_qkv: false,
    parts: &[
        (Part::Embed, "model.embed_tokens"),
        (Part::FinalNorm, "model.norm"),
        (Part::Head, "lm_head"),
        (Part::Norm1, "input_layernorm"),
        (Part::Norm2, "post_attention_layernorm"),
    ],
    extends: None,
    ignored: &[".rotary_emb.inv_freq"],
};

/// `LlamaForCausalLM` and the architectures named like it (Mistral, Qwen2, Qwen3, Gemma, StableLM).
static LLAMA: Layout = Layout::extend(
    &HF,
    Family::HfLlama,
    &[
        (Part::Q, "self_attn.q_proj"),
        (Part::K, "self_attn.k_proj"),
        (Part::V, "self_attn.v_proj"),
        (Part::QNorm, "self_attn.q_norm"),
        (Part::KNorm, "self_attn.k_norm"),
        (Part::Proj, "self_attn.o_proj"),
        (Part::Gate, "mlp.gate_proj"),
        (Part::Up, "mlp.up_proj"),
        (Part::Down, "mlp.down_proj"),
    ],
);

/// Gemma 2 and OLMo-2: `post_attention_layernorm` normalizes the attention output (not the MLP
/// input, which for Gemma 2 is `pre_feedforward_layernorm`; OLMo-2 has no input norms).
static POST_NORMED: Layout = Layout::extend(
    &LLAMA,
    Family::HfLlama,
    &[
        (Part::Norm2, "pre_feedforward_layernorm"),
        (Part::PostAttnNorm, "post_attention_layernorm"),
        (Part::PostMlpNorm, "post_feedforward_layernorm"),
    ],
);

/// `PhiForCausalLM` (Phi-1.5, Phi-2): one norm per block, shared by attention and MLP.
static PHI: Layout = Layout::extend(
    &HF,
    Family::HfPhi,
    &[
        (Part::FinalNorm, "model.final_layernorm"),
        (Part::Q, "self_attn.q_proj"),
        (Part::K, "self_attn.k_proj"),
        (Part::V, "self_attn.v_proj"),
        (Part::Proj, "self_attn.dense"),
        (Part::Fc, "mlp.fc1"),
        (Part::Down, "mlp.fc2"),
    ],
);

/// `Phi3ForCausalLM`: fused `qkv_proj` (`[Q | K | V]`) and `gate_up_proj` (`[gate; up]`).
static PHI3: Layout = Layout::extend(
    &HF,
    Family::HfPhi3,
    &[
        (Part::Qkv, "self_attn.qkv_proj"),
        (Part::Proj, "self_attn.o_proj"),
        (Part::GateUp, "mlp.gate_up_proj"),
        (Part::Down, "mlp.down_proj"),
    ],
);

/// `GPTNeoXForCausalLM` (Pythia): `query_key_value` grouped per head.
static GPT_NEOX: Layout = Layout {
    ignored: &[
        ".rotary_emb.inv_freq",
        ".attention.bias",
        ".attention.masked_bias",
    ],
    ..Layout::extend(
        &HF,
        Family::HfGptNeox,
        &[
            (Part::Embed, "gpt_neox.embed_in"),
            (Part::FinalNorm, "gpt_neox.final_layer_norm"),
            (Part::Head, "embed_out"),
            (Part::Qkv, "attention.query_key_value"),
            (Part::Proj, "attention.dense"),
            (Part::Fc, "mlp.dense_h_to_4h"),
            (Part::Down, "mlp.dense_4h_to_h"),
        ],
    )
    .blocks("gpt_neox.layers")
    .grouped()
};

/// `FalconForCausalLM`, 7B-style (one shared norm) or sequential: `query_key_value` grouped per
/// K/V head.
static FALCON: Layout = Layout::extend(
    &HF,
    Family::HfFalcon,
    &[
        (Part::Embed, "transformer.word_embeddings"),
        (Part::FinalNorm, "transformer.ln_f"),
        (Part::Qkv, "self_attention.query_key_value"),
        (Part::Proj, "self_attention.dense"),
        (Part::Fc, "mlp.dense_h_to_4h"),
        (Part::Down, "mlp.dense_4h_to_h"),
    ],
)
.blocks("transformer.h")
.grouped();

/// Falcon 40B/180B (the new decoder architecture with two norms per block).
static FALCON_NEW: Layout = Layout::extend(
    &FALCON,
    Family::HfFalcon,
    &[(Part::Norm1, "ln_attn"), (Part::Norm2, "ln_mlp")],
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout that extends another takes its names, except where it names a part itself:
    /// then the other's name for that part is not read as that part any more.
    #[test]
    fn overrides_replace_the_names_they_extend() {
        assert_eq!(
            FALCON_NEW.name(Part::Norm1, 2).as_deref(),
            Some("transformer.h.2.ln_attn")
        );
        assert_eq!(
            FALCON_NEW.name(Part::Proj, 2).as_deref(),
            Some("transformer.h.2.self_attention.dense")
        );
        assert_eq!(
            FALCON_NEW.part_of("transformer.h.2.ln_mlp"),
            Some((Part::Norm2, Some(2)))
        );
        assert_eq!(FALCON_NEW.part_of("transformer.h.2.input_layernorm"), None);
        assert_eq!(
            FALCON.part_of("transformer.h.2.input_layernorm"),
            Some((Part::Norm1, Some(2)))
        );
        assert_eq!(
            POST_NORMED.part_of("model.layers.0.post_attention_layernorm"),
            Some((Part::PostAttnNorm, Some(0)))
        );
        assert_eq!(POST_NORMED.part_of("lm_head"), Some((Part::Head, None)));
        assert_eq!(POST_NORMED.part_of("model.layers.+1.mlp.up_proj"), None);
        assert_eq!(POST_NORMED.linears(1).count(), 7);
    }
}
