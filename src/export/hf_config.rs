//! What a merged export writes besides the weights' values: the Hugging Face tensor names and
//! shapes an internal tensor becomes, and the `config.json` of the merged model.

use std::path::Path;

use crate::checkpoint::names::{Entry, Source};
use crate::config::{Arch, Family, MlpKind, ModelConfig, NormKind, RopeScaling};
use crate::error::{Error, Result};

/// Output tensors (HF name, shape) an internal entry becomes under the HF table `hf`.
pub(super) fn outputs(hf: &Entry, cfg: &ModelConfig, keep_tied: bool) -> Vec<(String, Vec<usize>)> {
    let rest = hf.shape[1..].to_vec();
    match &hf.source {
        Source::One(n) | Source::NeoxQkv(n) => vec![(n.clone(), hf.shape.clone())],
        // Fused row blocks (Phi-3 gate_up_proj) are refused before writing starts.
        Source::Rows(..) => vec![],
        Source::QkvConcat([q, k, v]) => {
            let (qr, kvr) = (
                cfg.n_head * cfg.head_size,
                cfg.n_query_groups * cfg.head_size,
            );
            vec![
                (q.clone(), [vec![qr], rest.clone()].concat()),
                (k.clone(), [vec![kvr], rest.clone()].concat()),
                (v.clone(), [vec![kvr], rest].concat()),
            ]
        }
        Source::Tied(head, _) => {
            if keep_tied {
                vec![]
            } else {
                vec![(head.clone(), hf.shape.clone())]
            }
        }
    }
}

/// Inverse of `names::neox_to_grouped`.
pub(super) fn grouped_to_neox(
    data: &[f32],
    row: usize,
    n_head: usize,
    groups: usize,
    hs: usize,
) -> Vec<f32> {
    let q_per_kv = n_head / groups;
    let (qn, kn) = (n_head * hs * row, groups * hs * row);
    let (q, k, v) = (&data[..qn], &data[qn..qn + kn], &data[qn + kn..]);
    let mut out = Vec::with_capacity(data.len());
    for g in 0..groups {
        let qs = q_per_kv * hs * row;
        out.extend_from_slice(&q[g * qs..(g + 1) * qs]);
        out.extend_from_slice(&k[g * hs * row..(g + 1) * hs * row]);
        out.extend_from_slice(&v[g * hs * row..(g + 1) * hs * row]);
    }
    out
}

/// The `config.json` for the merged model.
pub(super) fn hf_config(
    cfg: &ModelConfig,
    base_dir: &Path,
    tied: bool,
) -> Result<serde_json::Value> {
    let base_json = base_dir.join("config.json");
    if cfg.family != Family::LitGpt && base_json.is_file() {
        let text = crate::file::read_to_string(&base_json)?;
        let mut v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&base_json, e))?;
        v["tie_word_embeddings"] = serde_json::json!(tied);
        v["torch_dtype"] = serde_json::json!("float32");
        return Ok(v);
    }
    let rope_scaling = match &cfg.rope_scaling {
        None => serde_json::Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            serde_json::json!({"rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_seq_len,
        }) => serde_json::json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_seq_len,
        }),
    };
    let common = serde_json::json!({
        "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_query_groups, "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.padded_vocab_size, "max_position_embeddings": cfg.block_size,
        "tie_word_embeddings": tied, "torch_dtype": "float32", "head_dim": cfg.head_size,
    });
    let mut v = common;
    let extra = match cfg.arch {
        Arch::GptNeox => serde_json::json!({
            "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
            "rotary_pct": cfg.rope_n_elem as f64 / cfg.head_size as f64, "rotary_emb_base": cfg.rope_base,
            "layer_norm_eps": cfg.norm_eps, "use_parallel_residual": cfg.parallel_residual,
            "hidden_act": if cfg.gelu_tanh { "gelu_new" } else { "gelu" }, "attention_bias": cfg.qkv_bias,
        }),
        Arch::Falcon => {
            // Which Falcon decoder layout (and so which q/k/v grouping) the names follow.
            let layout = if cfg.shared_attention_norm && cfg.n_query_groups == 1 {
                serde_json::json!({"new_decoder_architecture": false, "multi_query": true})
            } else if cfg.shared_attention_norm && cfg.n_query_groups == cfg.n_head {
                serde_json::json!({"new_decoder_architecture": false, "multi_query": false})
            } else if cfg.parallel_residual {
                serde_json::json!({"new_decoder_architecture": true, "num_kv_heads": cfg.n_query_groups,
                    "num_ln_in_parallel_attn": if cfg.shared_attention_norm { 1 } else { 2 }})
            } else {
                return Err(Error::Unsupported(format!(
                    "exporting {} (sequential Falcon with grouped K/V) in Hugging Face layout",
                    cfg.name
                )));
            };
            let mut v = serde_json::json!({
                "model_type": "falcon", "architectures": ["FalconForCausalLM"], "ffn_hidden_size": cfg.intermediate_size,
                "layer_norm_epsilon": cfg.norm_eps, "rope_theta": cfg.rope_base, "parallel_attn": cfg.parallel_residual,
                "bias": cfg.mlp_bias, "alibi": false, "activation": "gelu",
            });
            if let (Some(o), Some(l)) = (v.as_object_mut(), layout.as_object()) {
                o.extend(l.clone());
            }
            if cfg.head_size * cfg.n_head != cfg.n_embd {
                return Err(Error::Unsupported(format!(
                    "exporting {} (Falcon with head size ≠ n_embd / n_head) in Hugging Face layout",
                    cfg.name
                )));
            }
            v
        }
        Arch::Phi => serde_json::json!({
            "model_type": "phi", "architectures": ["PhiForCausalLM"],
            "partial_rotary_factor": cfg.rope_n_elem as f64 / cfg.head_size as f64, "rope_theta": cfg.rope_base,
            "layer_norm_eps": cfg.norm_eps, "hidden_act": if cfg.gelu_tanh { "gelu_new" } else { "gelu" },
        }),
        _ => {
            if cfg.norm != (NormKind::RmsNorm { unit_offset: false }) || cfg.mlp != MlpKind::Llama {
                return Err(Error::Unsupported(format!(
                    "exporting {} ({:?}, {:?}) in Hugging Face layout",
                    cfg.name, cfg.norm, cfg.mlp
                )));
            }
            let olmo2 = crate::config::Extras {
                post_attention_norm: true,
                post_mlp_norm: true,
                no_norm_1: true,
                no_norm_2: true,
                norm_qk_all_heads: true,
                ..Default::default()
            };
            let is_olmo2 = cfg.extras == olmo2 && cfg.norm_qk;
            if !is_olmo2 && cfg.extras != Default::default() {
                return Err(Error::Unsupported(format!(
                    "exporting {} ({}) in Hugging Face layout",
                    cfg.name,
                    cfg.features().join(", ")
                )));
            }
            // Phi-3 is written unfused, in Llama's (or, sliding, Mistral's) names.
            let arch = match cfg.arch {
                Arch::Phi3 if cfg.sliding_window.is_some() => Arch::Mistral,
                Arch::Phi3 => Arch::Llama,
                a => a,
            };
            if !matches!(
                arch,
                Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 | Arch::Olmo2
            ) || (arch == Arch::Olmo2) != is_olmo2
            {
                return Err(Error::Unsupported(format!(
                    "exporting {} ({arch}) in Hugging Face layout",
                    cfg.name
                )));
            }
            let (mt, class) = (arch.hf_model_type(), arch.hf_class());
            serde_json::json!({
                "model_type": mt, "architectures": [class], "rms_norm_eps": cfg.norm_eps,
                "rope_theta": cfg.rope_base, "rope_scaling": rope_scaling, "hidden_act": "silu",
                "attention_bias": cfg.qkv_bias && cfg.attn_out_bias, "mlp_bias": cfg.mlp_bias,
                "sliding_window": cfg.sliding_window, "use_sliding_window": cfg.sliding_window.is_some(),
            })
        }
    };
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    if cfg.arch == Arch::Falcon {
        // FalconConfig derives these and refuses them as keys.
        if let Some(o) = v.as_object_mut() {
            for k in ["head_dim", "num_key_value_heads", "intermediate_size"] {
                o.remove(k);
            }
        }
    }
    Ok(v)
}
