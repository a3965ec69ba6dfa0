//! Each Hugging Face family's part of `config.json` → [`ModelConfig`]: what it reads and sets
//! beyond the fields they all read ([`Common`]'s `base`, a plain Llama until told otherwise).

use super::super::litgpt::Fields;
use super::super::{Extras, Family, MlpKind, ModelConfig, NormKind};
use super::{act, Common};
use crate::config::Arch;
use crate::error::Result;

/// The configuration of architecture `arch` (one reader per group of architectures).
pub(super) fn read(arch: Arch, f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    match arch {
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 | Arch::Olmo2 => llama_like(f, c),
        Arch::GptNeox => gpt_neox(f, c),
        Arch::Gemma | Arch::Gemma2 | Arch::Phi3 | Arch::StableLm => gemma_phi3_stablelm(f, c),
        Arch::Falcon => falcon(f, c),
        Arch::Phi => phi(f, c),
    }
}

/// `config.json` of `model_type` `llama` | `mistral` | `qwen2` | `qwen3` | `olmo2`.
fn llama_like(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
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
            if used && max_window_layers < c.base.n_layer {
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
        norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
        qkv_bias: attention_bias || qwen,
        attn_out_bias: attention_bias,
        mlp_bias,
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
        ..c.base
    })
}

/// `config.json` of `model_type` `gpt_neox`.
fn gpt_neox(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let gelu_tanh = gelu(f, &c)?;
    let rotary_pct = f.f64("rotary_pct")?.or(c.rp_partial).unwrap_or(0.25);
    let bias = f.bool("attention_bias")?.unwrap_or(true);
    Ok(ModelConfig {
        family: Family::HfGptNeox,
        n_query_groups: c.base.n_head,
        norm: NormKind::LayerNorm,
        norm_eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5),
        mlp: MlpKind::GptNeox,
        gelu_tanh,
        qkv_bias: bias,
        attn_out_bias: bias,
        mlp_bias: true,
        parallel_residual: f.bool("use_parallel_residual")?.unwrap_or(true),
        rope_n_elem: (rotary_pct * c.base.head_size as f64) as usize,
        rope_base: f.f64("rotary_emb_base")?.unwrap_or(c.base.rope_base),
        ..c.base
    })
}

/// `config.json` of `model_type` `gemma` | `gemma2` | `phi3` | `stablelm`.
fn gemma_phi3_stablelm(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let gemma2 = c.model_type == "gemma2";
    let gemma = c.model_type == "gemma" || gemma2;
    let stablelm = c.model_type == "stablelm";
    let n_layer = c.base.n_layer;
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
    if stablelm {
        no_qk_layernorm(f)?;
    }
    let partial = f
        .f64("partial_rotary_factor")?
        .or(c.rp_partial)
        .unwrap_or(if stablelm { 0.25 } else { 1.0 });
    let (norm, norm_eps) = if stablelm {
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
        f.usize("sliding_window")?
            .filter(|&w| w < c.base.block_size)
    } else {
        None
    };
    let mut extras = Extras::default();
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
                .filter(|l| l.len() >= n_layer)
                .ok_or_else(|| f.err("layer_types", format!("expected {n_layer} entries")))?,
            None => (0..n_layer).map(|i| i % 2 == 0).collect(),
        });
    }
    Ok(ModelConfig {
        family: if c.model_type == "phi3" {
            Family::HfPhi3
        } else {
            Family::HfLlama
        },
        norm,
        norm_eps,
        mlp: if gemma {
            MlpKind::Gemma
        } else {
            MlpKind::Llama
        },
        gelu_tanh,
        qkv_bias,
        parallel_residual: stablelm && f.bool("use_parallel_residual")?.unwrap_or(false),
        rope_n_elem: (partial * c.base.head_size as f64) as usize,
        scale_embeddings: gemma,
        sliding_window,
        extras,
        ..c.base
    })
}

/// `config.json` of `model_type` `falcon`.
fn falcon(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    if f.bool("alibi")?.unwrap_or(false) {
        return Err(f.err("alibi", "ALiBi position biases are not supported"));
    }
    let a = f.string("activation")?.unwrap_or_else(|| "gelu".into());
    if a != "gelu" {
        return Err(f.err("activation", format!("`{a}` is not supported")));
    }
    let bias = f.bool("bias")?.unwrap_or(false);
    let parallel_attn = f.bool("parallel_attn")?.unwrap_or(true);
    let n_head = c.base.n_head;
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
        (f.usize("num_kv_heads")?.unwrap_or(n_head), n_ln == 1)
    } else if f.bool("multi_query")?.unwrap_or(true) {
        (1, parallel_attn)
    } else {
        (n_head, parallel_attn)
    };
    Ok(ModelConfig {
        family: Family::HfFalcon,
        n_query_groups: groups,
        norm: NormKind::LayerNorm,
        norm_eps: f.f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        mlp: MlpKind::GptNeox,
        qkv_bias: bias,
        attn_out_bias: bias,
        mlp_bias: bias,
        parallel_residual: parallel_attn,
        shared_attention_norm: shared,
        ..c.base
    })
}

/// `config.json` of `model_type` `phi`.
fn phi(f: &mut Fields<'_>, c: Common) -> Result<ModelConfig> {
    let gelu_tanh = gelu(f, &c)?;
    no_qk_layernorm(f)?;
    let partial = f
        .f64("partial_rotary_factor")?
        .or(c.rp_partial)
        .unwrap_or(0.5);
    Ok(ModelConfig {
        family: Family::HfPhi,
        norm: NormKind::LayerNorm,
        norm_eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5),
        mlp: MlpKind::GptNeox,
        gelu_tanh,
        qkv_bias: true,
        attn_out_bias: true,
        mlp_bias: true,
        lm_head_bias: true,
        parallel_residual: true,
        shared_attention_norm: true,
        rope_n_elem: (partial * c.base.head_size as f64) as usize,
        ..c.base
    })
}

/// Refuses `qk_layernorm` (StableLM, Phi): their per-head q/k LayerNorms are not built.
fn no_qk_layernorm(f: &mut Fields<'_>) -> Result<()> {
    if f.bool("qk_layernorm")?.unwrap_or(false) {
        return Err(f.err(
            "qk_layernorm",
            "query/key layer norms are not supported yet",
        ));
    }
    Ok(())
}

/// Whether the GELU of `hidden_act` (GPT-NeoX, Phi; default exact) is tanh-approximated.
fn gelu(f: &Fields<'_>, c: &Common) -> Result<bool> {
    let tanh = ["gelu_new", "gelu_pytorch_tanh"];
    act(f, &c.hidden_act, &c.model_type, &["gelu"], &tanh)
}
