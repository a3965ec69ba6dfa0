//! Hugging Face `config.json` → [`ModelConfig`] for llama, mistral, qwen2, gpt_neox and phi.
//!
//! HF configs carry many training-only fields, so unknown keys are ignored; the fields that change
//! the forward pass are all read, and values graftlm cannot honour are errors naming the field.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::litgpt::{rope_scaling_from, Fields};
use super::{Arch, Family, MlpKind, ModelConfig, NormKind};
use crate::error::{Error, Result};

pub(super) fn parse(text: &str, path: &Path, default_name: &str) -> Result<ModelConfig> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::parse(path, e))?;
    let serde_json::Value::Object(obj) = json else {
        return Err(Error::parse(path, "expected a JSON object"));
    };
    // Re-express as YAML values so the LitGPT field helpers can be shared.
    let mut map = BTreeMap::new();
    for (k, v) in obj {
        let v: Value = serde_yaml::to_value(&v).map_err(|e| Error::parse(path, e))?;
        map.insert(k, v);
    }
    let mut f = Fields::new(map, path);
    let model_type = f
        .string("model_type")?
        .ok_or_else(|| Error::UnknownArchitecture {
            path: path.to_path_buf(),
            arch: "(config.json has no model_type)".into(),
        })?;
    let Some(arch) = Arch::from_hf_model_type(&model_type) else {
        return Err(Error::UnknownArchitecture {
            path: path.to_path_buf(),
            arch: model_type,
        });
    };
    let name = f
        .string("_name_or_path")?
        .and_then(|p| {
            p.trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default_name.to_string());

    let need = |f: &mut Fields<'_>, key: &str| -> Result<usize> {
        f.usize(key)?
            .ok_or_else(|| f.err(key, "required field is missing"))
    };
    let n_embd = need(&mut f, "hidden_size")?;
    let n_layer = need(&mut f, "num_hidden_layers")?;
    let n_head = need(&mut f, "num_attention_heads")?;
    let padded_vocab_size = need(&mut f, "vocab_size")?;
    let intermediate_size = if model_type == "falcon" {
        f.usize("ffn_hidden_size")?.unwrap_or(4 * n_embd)
    } else {
        need(&mut f, "intermediate_size")?
    };
    let block_size = f.usize("max_position_embeddings")?.unwrap_or(2048);
    let head_size = match f.usize("head_dim")? {
        Some(h) => h,
        None if n_head > 0 && n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(f.err(
                "num_attention_heads",
                format!(
                    "hidden_size ({n_embd}) is not a multiple of num_attention_heads ({n_head})"
                ),
            ))
        }
    };
    let n_query_groups = f.usize("num_key_value_heads")?.unwrap_or(n_head);
    let tie_embeddings = f
        .bool("tie_word_embeddings")?
        .unwrap_or(matches!(model_type.as_str(), "gemma" | "gemma2" | "falcon"));
    // transformers ≥ 5 nests RoPE settings in `rope_parameters`; older files keep them top-level.
    let rope_params = f.take("rope_parameters");
    let rp = |k: &str| {
        rope_params
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_f64)
    };
    let (rp_theta, rp_partial) = (rp("rope_theta"), rp("partial_rotary_factor"));
    let rope_scaling = match (f.take("rope_scaling"), &rope_params) {
        (Some(v), _) => rope_scaling_from(&f, "rope_scaling", &v)?,
        (None, Some(v)) => rope_scaling_from(&f, "rope_parameters", v)?,
        (None, None) => None,
    };
    let hidden_act = f.string("hidden_act")?;
    let act = |f: &Fields<'_>, allowed: &[&str], tanh: &[&str]| -> Result<bool> {
        let a = hidden_act.clone().unwrap_or_else(|| allowed[0].to_string());
        if tanh.contains(&a.as_str()) {
            Ok(true)
        } else if allowed.contains(&a.as_str()) {
            Ok(false)
        } else {
            Err(f.err(
                "hidden_act",
                format!("`{a}` is not supported for {model_type}"),
            ))
        }
    };

    let cfg = match model_type.as_str() {
        "llama" | "mistral" | "qwen2" | "qwen3" | "olmo2" => {
            let olmo2 = model_type == "olmo2";
            act(&f, &["silu"], &[])?;
            let qwen = model_type == "qwen2";
            let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
            let mlp_bias = f.bool("mlp_bias")?.unwrap_or(false);
            let sliding_window = match model_type.as_str() {
                "mistral" => f.usize("sliding_window")?,
                "qwen2" | "qwen3" => {
                    let window = f.usize("sliding_window")?;
                    let used = f.bool("use_sliding_window")?.unwrap_or(false);
                    let max_window_layers = f.usize("max_window_layers")?.unwrap_or(0);
                    if used && max_window_layers < n_layer {
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
            ModelConfig {
                name,
                arch,
                family: Family::HfLlama,
                block_size,
                n_layer,
                n_embd,
                n_head,
                head_size,
                n_query_groups,
                padded_vocab_size,
                norm: NormKind::RmsNorm { unit_offset: false },
                norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
                mlp: MlpKind::Llama,
                intermediate_size,
                gelu_tanh: false,
                qkv_bias: attention_bias || qwen,
                attn_out_bias: attention_bias,
                mlp_bias,
                lm_head_bias: false,
                parallel_residual: false,
                shared_attention_norm: false,
                rope_n_elem: head_size,
                rope_base: f.f64("rope_theta")?.or(rp_theta).unwrap_or(10000.0),
                rope_condense_ratio: 1,
                rope_scaling,
                scale_embeddings: false,
                tie_embeddings,
                sliding_window,
                norm_qk: model_type == "qwen3" || olmo2,
                // OLMo-2: norms on the attention and MLP outputs only, q/k norms over all heads.
                extras: super::Extras {
                    post_attention_norm: olmo2,
                    post_mlp_norm: olmo2,
                    no_norm_1: olmo2,
                    no_norm_2: olmo2,
                    norm_qk_all_heads: olmo2,
                    ..Default::default()
                },
            }
        }
        "gpt_neox" => {
            let gelu_tanh = act(&f, &["gelu"], &["gelu_new", "gelu_pytorch_tanh"])?;
            let rotary_pct = f.f64("rotary_pct")?.or(rp_partial).unwrap_or(0.25);
            let bias = f.bool("attention_bias")?.unwrap_or(true);
            ModelConfig {
                name,
                arch,
                family: Family::HfGptNeox,
                block_size,
                n_layer,
                n_embd,
                n_head,
                head_size,
                n_query_groups: n_head,
                padded_vocab_size,
                norm: NormKind::LayerNorm,
                norm_eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5),
                mlp: MlpKind::GptNeox,
                intermediate_size,
                gelu_tanh,
                qkv_bias: bias,
                attn_out_bias: bias,
                mlp_bias: true,
                lm_head_bias: false,
                parallel_residual: f.bool("use_parallel_residual")?.unwrap_or(true),
                shared_attention_norm: false,
                rope_n_elem: (rotary_pct * head_size as f64) as usize,
                rope_base: f
                    .f64("rotary_emb_base")?
                    .or(f.f64("rope_theta")?)
                    .or(rp_theta)
                    .unwrap_or(10000.0),
                rope_condense_ratio: 1,
                rope_scaling,
                scale_embeddings: false,
                tie_embeddings,
                sliding_window: None,
                norm_qk: false,
                extras: Default::default(),
            }
        }
        "gemma" | "gemma2" | "phi3" | "stablelm" => {
            let gemma2 = model_type == "gemma2";
            let gemma = model_type == "gemma" || gemma2;
            let stablelm = model_type == "stablelm";
            // Gemma names its activation `hidden_activation` (older files: `hidden_act`).
            let gelu_tanh = if gemma {
                let a = f
                    .string("hidden_activation")?
                    .or(hidden_act.clone())
                    .unwrap_or_else(|| "gelu_pytorch_tanh".into());
                match a.as_str() {
                    "gelu_pytorch_tanh" | "gelu_new" => true,
                    "gelu" => false,
                    other => {
                        return Err(
                            f.err("hidden_activation", format!("`{other}` is not supported"))
                        )
                    }
                }
            } else {
                act(&f, &["silu"], &[])?;
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
                .or(rp_partial)
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
            let sliding_window = if model_type == "phi3" || gemma2 {
                f.usize("sliding_window")?.filter(|&w| w < block_size)
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
                        .filter(|l| l.len() >= n_layer)
                        .ok_or_else(|| {
                            f.err("layer_types", format!("expected {n_layer} entries"))
                        })?,
                    None => (0..n_layer).map(|i| i % 2 == 0).collect(),
                });
            }
            ModelConfig {
                name,
                arch,
                family: if model_type == "phi3" {
                    Family::HfPhi3
                } else {
                    Family::HfLlama
                },
                block_size,
                n_layer,
                n_embd,
                n_head,
                head_size,
                n_query_groups,
                padded_vocab_size,
                norm,
                norm_eps: eps,
                mlp: if gemma {
                    MlpKind::Gemma
                } else {
                    MlpKind::Llama
                },
                intermediate_size,
                gelu_tanh,
                qkv_bias,
                attn_out_bias: false,
                mlp_bias: false,
                lm_head_bias: false,
                parallel_residual: stablelm && f.bool("use_parallel_residual")?.unwrap_or(false),
                shared_attention_norm: false,
                rope_n_elem: (partial * head_size as f64) as usize,
                rope_base: f.f64("rope_theta")?.or(rp_theta).unwrap_or(10000.0),
                rope_condense_ratio: 1,
                rope_scaling,
                scale_embeddings: gemma,
                tie_embeddings,
                sliding_window,
                norm_qk: model_type == "qwen3",
                extras,
            }
        }
        "falcon" => {
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
                (f.usize("num_kv_heads")?.unwrap_or(n_head), n_ln == 1)
            } else if f.bool("multi_query")?.unwrap_or(true) {
                (1, parallel_attn)
            } else {
                (n_head, parallel_attn)
            };
            ModelConfig {
                name,
                arch,
                family: Family::HfFalcon,
                block_size,
                n_layer,
                n_embd,
                n_head,
                head_size,
                n_query_groups: groups,
                padded_vocab_size,
                norm: NormKind::LayerNorm,
                norm_eps: f.f64("layer_norm_epsilon")?.unwrap_or(1e-5),
                mlp: MlpKind::GptNeox,
                intermediate_size,
                gelu_tanh: false,
                qkv_bias: bias,
                attn_out_bias: bias,
                mlp_bias: bias,
                lm_head_bias: false,
                parallel_residual: parallel_attn,
                shared_attention_norm: shared,
                rope_n_elem: head_size,
                rope_base: f.f64("rope_theta")?.or(rp_theta).unwrap_or(10000.0),
                rope_condense_ratio: 1,
                rope_scaling,
                scale_embeddings: false,
                tie_embeddings,
                sliding_window: None,
                norm_qk: false,
                extras: Default::default(),
            }
        }
        "phi" => {
            let gelu_tanh = act(&f, &["gelu"], &["gelu_new", "gelu_pytorch_tanh"])?;
            if f.bool("qk_layernorm")?.unwrap_or(false) {
                return Err(f.err(
                    "qk_layernorm",
                    "query/key layer norms are not supported yet",
                ));
            }
            let partial = f
                .f64("partial_rotary_factor")?
                .or(rp_partial)
                .unwrap_or(0.5);
            ModelConfig {
                name,
                arch,
                family: Family::HfPhi,
                block_size,
                n_layer,
                n_embd,
                n_head,
                head_size,
                n_query_groups,
                padded_vocab_size,
                norm: NormKind::LayerNorm,
                norm_eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5),
                mlp: MlpKind::GptNeox,
                intermediate_size,
                gelu_tanh,
                qkv_bias: true,
                attn_out_bias: true,
                mlp_bias: true,
                lm_head_bias: true,
                parallel_residual: true,
                shared_attention_norm: true,
                rope_n_elem: (partial * head_size as f64) as usize,
                rope_base: f.f64("rope_theta")?.or(rp_theta).unwrap_or(10000.0),
                rope_condense_ratio: 1,
                rope_scaling,
                scale_embeddings: false,
                tie_embeddings,
                sliding_window: None,
                norm_qk: false,
                extras: Default::default(),
            }
        }
        other => {
            return Err(Error::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: other.to_string(),
            })
        }
    };
    Ok(cfg)
}
