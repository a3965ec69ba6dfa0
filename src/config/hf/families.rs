//! Each Hugging Face family's part of `config.json` → [`ModelConfig`], from the fields they all
//! read ([`Common`]).

use super::super::litgpt::Fields;
use super::super::{Extras, Family, MlpKind, ModelConfig, NormKind};
use super::{act, Common};
use crate::error::Result;

/// `config.json` of `model_type` `llama` | `mistral` | `qwen2` | `qwen3` | `olmo2`.
pub(super) fn llama_like(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let olmo2 = c.model_type == "olmo2";
    act(f, &c.hidden_act, &c.model_type, &["silu"], &[])?;
    let qwen = c.model_type == "qwen2";
    let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
    let mlp_bias = f.bool("mlp_bias")?.unwrap_or(false);
    let sliding_window = match c.model_type.as_str() {
        "mistral" => f.usize("sliding_window")?,
        "qwen2" | "qwen3" => {
            let window = f.usize("sliding_window")?;
            let used = f.bool("use_sliding_window")?.unwrap_or(false);
            let max_window_layers = f.usize("max_window_layers")?.unwrap_or(0);
            if used && max_window_layers < c.n_layer {
                return Err(f.err(
                    "use_sliding_window",
                    "per-layer sliding windows are not supported yet",
                ));
            }
            if used {
                window
            } else {
                None
            }
        }
        _ => None,
    };
    if let Some(p) = f.usize("pretraining_tp")? {
        if p != 1 {
            return Err(f.err("pretraining_tp", format!("{p} is not supported")));
        }
    }
    Ok(ModelConfig {
        name: c.name,
        arch: c.arch,
        family: Family::HfLlama,
        block_size: c.block_size,
        n_layer: c.n_layer,
        n_embd: c.n_embd,
        n_head: c.n_head,
        head_size: c.head_size,
        n_query_groups: c.n_query_groups,
        padded_vocab_size: c.padded_vocab_size,
        norm: NormKind::RmsNorm { unit_offset: false },
        norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
        mlp: MlpKind::Llama,
        intermediate_size: c.intermediate_size,
        gelu_tanh: false,
        qkv_bias: attention_bias || qwen,
        attn_out_bias: attention_bias,
        mlp_bias,
        lm_head_bias: false,
        parallel_residual: false,
        shared_attention_norm: false,
        rope_n_elem: c.head_size,
        rope_base: f.f64("rope_theta")?.or(c.rp_theta).unwrap_or(10000.0),
        rope_condense_ratio: 1,
        rope_scaling: c.rope_scaling,
        scale_embeddings: false,
        tie_embeddings: c.tie_embeddings,
        sliding_window,
        norm_qk: c.model_type == "qwen3" || olmo2,
        // OLMo-2: norms on the attention and MLP outputs only, q/k norms over all heads.
        extras: Extras {
            post_attention_norm: olmo2,
            post_mlp_norm: olmo2,
            no_norm_1: olmo2,
            no_norm_2: olmo2,
            norm_qk_all_heads: olmo2,
            ..Default::default()
        },
    })
}

/// `config.json` of `model_type` `gpt_neox`.
pub(super) fn gpt_neox(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let gelu_tanh = act(
        f,
        &c.hidden_act,
        &c.model_type,
        &["gelu"],
        &["gelu_new", "gelu_pytorch_tanh"],
    )?;
    let rotary_pct = f.f64("rotary_pct")?.or(c.rp_partial).unwrap_or(0.25);
    let bias = f.bool("attention_bias")?.unwrap_or(true);
    Ok(ModelConfig {
        name: c.name,
        arch: c.arch,
        family: Family::HfGptNeox,
        block_size: c.block_size,
        n_layer: c.n_layer,
        n_embd: c.n_embd,
        n_head: c.n_head,
        head_size: c.head_size,
        n_query_groups: c.n_head,
        padded_vocab_size: c.padded_vocab_size,
        norm: NormKind::LayerNorm,
        norm_eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5),
        mlp: MlpKind::GptNeox,
        intermediate_size: c.intermediate_size,
        gelu_tanh,
        qkv_bias: bias,
        attn_out_bias: bias,
        mlp_bias: true,
        lm_head_bias: false,
        parallel_residual: f.bool("use_parallel_residual")?.unwrap_or(true),
        shared_attention_norm: false,
        rope_n_elem: (rotary_pct * c.head_size as f64) as usize,
        rope_base: f
            .f64("rotary_emb_base")?
            .or(f.f64("rope_theta")?)
            .or(c.rp_theta)
            .unwrap_or(10000.0),
        rope_condense_ratio: 1,
        rope_scaling: c.rope_scaling,
        scale_embeddings: false,
        tie_embeddings: c.tie_embeddings,
        sliding_window: None,
        norm_qk: false,
        extras: Default::default(),
    })
}

/// `config.json` of `model_type` `gemma` | `gemma2` | `phi3` | `stablelm`.
pub(super) fn gemma_phi3_stablelm(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let gemma2 = c.model_type == "gemma2";
    let gemma = c.model_type == "gemma" || gemma2;
    let stablelm = c.model_type == "stablelm";
    // Gemma names its activation `hidden_activation` (older files: `c.hidden_act`).
    let gelu_tanh = if gemma {
        let a = f
            .string("hidden_activation")?
            .or(c.hidden_act.clone())
            .unwrap_or_else(|| "gelu_pytorch_tanh".into());
        match a.as_str() {
            "gelu_pytorch_tanh" | "gelu_new" => true,
            "gelu" => false,
            other => return Err(f.err("hidden_activation", format!("`{other}` is not supported"))),
        }
    } else {
        act(f, &c.hidden_act, &c.model_type, &["silu"], &[])?;
        false
    };
    if stablelm && f.bool("qk_layernorm")?.unwrap_or(false) {
        return Err(f.err(
            "qk_layernorm",
            "query/key layer norms are not supported yet",
        ));
    }
    let partial = f
        .f64("partial_rotary_factor")?
        .or(c.rp_partial)
        .unwrap_or(if stablelm { 0.25 } else { 1.0 });
    let (norm, eps) = if stablelm {
        (
            NormKind::LayerNorm,
            f.f64("layer_norm_eps")?.unwrap_or(1e-5),
        )
    } else {
        (
            NormKind::RmsNorm { unit_offset: gemma },
            f.f64("rms_norm_eps")?.unwrap_or(1e-6),
        )
    };
    let qkv_bias = if stablelm {
        f.bool("use_qkv_bias")?.unwrap_or(false)
    } else {
        f.bool("attention_bias")?.unwrap_or(false)
    };
    let sliding_window = if c.model_type == "phi3" || gemma2 {
        f.usize("sliding_window")?.filter(|&w| w < c.block_size)
    } else {
        None
    };
    let mut extras = crate::config::Extras::default();
    if gemma2 {
        extras.post_attention_norm = true;
        extras.post_mlp_norm = true;
        extras.attention_softcap = f.f64("attn_logit_softcapping")?;
        extras.final_softcap = f.f64("final_logit_softcapping")?;
        extras.attention_scores_scalar = f.f64("query_pre_attn_scalar")?;
        // transformers ≥ 4.5x lists `layer_types`; older Gemma 2 slides on even layers.
        extras.sliding_window_layers = Some(match f.take("layer_types") {
            Some(v) => v
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .map(|x| x.as_str() == Some("sliding_attention"))
                        .collect::<Vec<bool>>()
                })
                .filter(|l| l.len() >= c.n_layer)
                .ok_or_else(|| f.err("layer_types", format!("expected {} entries", c.n_layer)))?,
            None => (0..c.n_layer).map(|i| i % 2 == 0).collect(),
        });
    }
    Ok(ModelConfig {
        name: c.name,
        arch: c.arch,
        family: if c.model_type == "phi3" {
            Family::HfPhi3
        } else {
            Family::HfLlama
        },
        block_size: c.block_size,
        n_layer: c.n_layer,
        n_embd: c.n_embd,
        n_head: c.n_head,
        head_size: c.head_size,
        n_query_groups: c.n_query_groups,
        padded_vocab_size: c.padded_vocab_size,
        norm,
        norm_eps: eps,
        mlp: if gemma {
            MlpKind::Gemma
        } else {
            MlpKind::Llama
        },
        intermediate_size: c.intermediate_size,
        gelu_tanh,
        qkv_bias,
        attn_out_bias: false,
        mlp_bias: false,
        lm_head_bias: false,
        parallel_residual: stablelm && f.bool("use_parallel_residual")?.unwrap_or(false),
        shared_attention_norm: false,
        rope_n_elem: (partial * c.head_size as f64) as usize,
        rope_base: f.f64("rope_theta")?.or(c.rp_theta).unwrap_or(10000.0),
        rope_condense_ratio: 1,
        rope_scaling: c.rope_scaling,
        scale_embeddings: gemma,
        tie_embeddings: c.tie_embeddings,
        sliding_window,
        norm_qk: c.model_type == "qwen3",
        extras,
    })
}

/// `config.json` of `model_type` `falcon`.
pub(super) fn falcon(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    if f.bool("alibi")?.unwrap_or(false) {
        return Err(f.err("alibi", "ALiBi position biases are not supported"));
    }
    let a = f.string("activation")?.unwrap_or_else(|| "gelu".into());
    if a != "gelu" {
        return Err(f.err("activation", format!("`{a}` is not supported")));
    }
    let bias = f.bool("bias")?.unwrap_or(false);
    let parallel_attn = f.bool("parallel_attn")?.unwrap_or(true);
    // Falcon-40B/180B ("new decoder"): grouped K/V, parallel, two norms (ln_attn, ln_mlp)
    // unless `num_ln_in_parallel_attn` is 1. Falcon-7B: multi-query, one shared norm.
    let (groups, shared) = if f.bool("new_decoder_architecture")?.unwrap_or(false) {
        if !parallel_attn {
            return Err(f.err(
                "parallel_attn",
                "the new decoder architecture without parallel attention is not supported",
            ));
        }
        let n_ln = f.usize("num_ln_in_parallel_attn")?.unwrap_or(2);
        (f.usize("num_kv_heads")?.unwrap_or(c.n_head), n_ln == 1)
    } else if f.bool("multi_query")?.unwrap_or(true) {
        (1, parallel_attn)
    } else {
        (c.n_head, parallel_attn)
    };
    Ok(ModelConfig {
        name: c.name,
        arch: c.arch,
        family: Family::HfFalcon,
        block_size: c.block_size,
        n_layer: c.n_layer,
        n_embd: c.n_embd,
        n_head: c.n_head,
        head_size: c.head_size,
        n_query_groups: groups,
        padded_vocab_size: c.padded_vocab_size,
        norm: NormKind::LayerNorm,
        norm_eps: f.f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        mlp: MlpKind::GptNeox,
        intermediate_size: c.intermediate_size,
        gelu_tanh: false,
        qkv_bias: bias,
        attn_out_bias: bias,
        mlp_bias: bias,
        lm_head_bias: false,
        parallel_residual: parallel_attn,
        shared_attention_norm: shared,
        rope_n_elem: c.head_size,
        rope_base: f.f64("rope_theta")?.or(c.rp_theta).unwrap_or(10000.0),
        rope_condense_ratio: 1,
        rope_scaling: c.rope_scaling,
        scale_embeddings: false,
        tie_embeddings: c.tie_embeddings,
        sliding_window: None,
        norm_qk: false,
        extras: Default::default(),
    })
}

/// `config.json` of `model_type` `phi`.
pub(super) fn phi(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let gelu_tanh = act(
        f,
        &c.hidden_act,
        &c.model_type,
        &["gelu"],
        &["gelu_new", "gelu_pytorch_tanh"],
    )?;
    if f.bool("qk_layernorm")?.unwrap_or(false) {
        return Err(f.err(
            "qk_layernorm",
            "query/key layer norms are not supported yet",
        ));
    }
    let partial = f
        .f64("partial_rotary_factor")?
        .or(c.rp_partial)
        .unwrap_or(0.5);
    Ok(ModelConfig {
        name: c.name,
        arch: c.arch,
        family: Family::HfPhi,
        block_size: c.block_size,
        n_layer: c.n_layer,
        n_embd: c.n_embd,
        n_head: c.n_head,
        head_size: c.head_size,
        n_query_groups: c.n_query_groups,
        padded_vocab_size: c.padded_vocab_size,
        norm: NormKind::LayerNorm,
        norm_eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5),
        mlp: MlpKind::GptNeox,
        intermediate_size: c.intermediate_size,
        gelu_tanh,
        qkv_bias: true,
        attn_out_bias: true,
        mlp_bias: true,
        lm_head_bias: true,
        parallel_residual: true,
        shared_attention_norm: true,
        rope_n_elem: (partial * c.head_size as f64) as usize,
        rope_base: f.f64("rope_theta")?.or(c.rp_theta).unwrap_or(10000.0),
        rope_condense_ratio: 1,
        rope_scaling: c.rope_scaling,
        scale_embeddings: false,
        tie_embeddings: c.tie_embeddings,
        sliding_window: None,
        norm_qk: false,
        extras: Default::default(),
    })
}
