//! THE name table: which stored tensor (or tensors) feed each model parameter, in which layout.
//!
//! Model parameters are named as in LitGPT (`transformer.h.{i}.attn.qkv.weight`, ...) and are
//! stored `[out, in]` like PyTorch. Each format maps onto those names; fused q/k/v always ends up
//! as LitGPT's `[Q | K | V]` row blocks. [`load`] checks that every parameter is present with the
//! right shape and that no stored tensor is left unused.

use crate::config::{Family, MlpKind, ModelConfig, NormKind};

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

/// The full table for a configuration.
pub fn table(cfg: &ModelConfig) -> Vec<Entry> {
    let e = cfg.n_embd;
    let hs = cfg.head_size;
    let q_rows = cfg.n_head * hs;
    let kv_rows = cfg.n_query_groups * hs;
    let layer_norm = cfg.norm == NormKind::LayerNorm;
    let mut t = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, source: Source| {
        t.push(Entry {
            name,
            shape,
            source,
        });
    };
    let one = |s: String| Source::One(s);

    // (prefix for layers, embedding, final norm, head) per family.
    let (wte, ln_f, head) = match cfg.family {
        Family::LitGpt => ("transformer.wte", "transformer.ln_f", "lm_head"),
        Family::HfLlama | Family::HfPhi3 => ("model.embed_tokens", "model.norm", "lm_head"),
        Family::HfGptNeox => (
            "gpt_neox.embed_in",
            "gpt_neox.final_layer_norm",
            "embed_out",
        ),
        Family::HfPhi => ("model.embed_tokens", "model.final_layernorm", "lm_head"),
        Family::HfFalcon => ("transformer.word_embeddings", "transformer.ln_f", "lm_head"),
    };
    push(
        "transformer.wte.weight".into(),
        vec![cfg.padded_vocab_size, e],
        one(format!("{wte}.weight")),
    );

    for i in 0..cfg.n_layer {
        let lit = |s: &str| format!("transformer.h.{i}.{s}");
        // Stored names for: norm_1, norm_2, qkv (kind), proj, mlp names.
        let (n1, n2, proj, mlp): (String, Option<String>, String, [String; 3]) = match cfg.family {
            Family::LitGpt => (
                lit("norm_1"),
                Some(lit("norm_2")),
                lit("attn.proj"),
                [lit("mlp.fc"), lit("mlp.fc_1"), lit("mlp.fc_2")],
            ),
            Family::HfLlama | Family::HfPhi3 => {
                let p = format!("model.layers.{i}");
                (
                    format!("{p}.input_layernorm"),
                    Some(format!("{p}.post_attention_layernorm")),
                    format!("{p}.self_attn.o_proj"),
                    [
                        String::new(),
                        format!("{p}.mlp.gate_proj"),
                        format!("{p}.mlp.up_proj"),
                    ],
                )
            }
            Family::HfGptNeox => {
                let p = format!("gpt_neox.layers.{i}");
                (
                    format!("{p}.input_layernorm"),
                    Some(format!("{p}.post_attention_layernorm")),
                    format!("{p}.attention.dense"),
                    [
                        format!("{p}.mlp.dense_h_to_4h"),
                        String::new(),
                        String::new(),
                    ],
                )
            }
            Family::HfFalcon => {
                let p = format!("transformer.h.{i}");
                // 7B: one shared norm; 40B/180B: ln_attn + ln_mlp; sequential: post-attention.
                let (n1, n2) = if cfg.shared_attention_norm {
                    ("input_layernorm", None)
                } else if cfg.parallel_residual {
                    ("ln_attn", Some(format!("{p}.ln_mlp")))
                } else {
                    (
                        "input_layernorm",
                        Some(format!("{p}.post_attention_layernorm")),
                    )
                };
                (
                    format!("{p}.{n1}"),
                    n2,
                    format!("{p}.self_attention.dense"),
                    [
                        format!("{p}.mlp.dense_h_to_4h"),
                        String::new(),
                        String::new(),
                    ],
                )
            }
            Family::HfPhi => {
                let p = format!("model.layers.{i}");
                (
                    format!("{p}.input_layernorm"),
                    None,
                    format!("{p}.self_attn.dense"),
                    [format!("{p}.mlp.fc1"), String::new(), String::new()],
                )
            }
        };
        let mlp_proj = match cfg.family {
            Family::LitGpt => lit("mlp.proj"),
            Family::HfLlama | Family::HfPhi3 => format!("model.layers.{i}.mlp.down_proj"),
            Family::HfGptNeox => format!("gpt_neox.layers.{i}.mlp.dense_4h_to_h"),
            Family::HfPhi => format!("model.layers.{i}.mlp.fc2"),
            Family::HfFalcon => format!("transformer.h.{i}.mlp.dense_4h_to_h"),
        };

        if !cfg.extras.no_norm_1 {
            push(lit("norm_1.weight"), vec![e], one(format!("{n1}.weight")));
            if layer_norm {
                push(lit("norm_1.bias"), vec![e], one(format!("{n1}.bias")));
            }
        }

        let qkv = |suffix: &str| -> Source {
            match cfg.family {
                Family::LitGpt => one(lit(&format!("attn.qkv.{suffix}"))),
                Family::HfLlama | Family::HfPhi => {
                    let p = format!("model.layers.{i}.self_attn");
                    Source::QkvConcat([
                        format!("{p}.q_proj.{suffix}"),
                        format!("{p}.k_proj.{suffix}"),
                        format!("{p}.v_proj.{suffix}"),
                    ])
                }
                Family::HfGptNeox => Source::NeoxQkv(format!(
                    "gpt_neox.layers.{i}.attention.query_key_value.{suffix}"
                )),
                Family::HfPhi3 => one(format!("model.layers.{i}.self_attn.qkv_proj.{suffix}")),
                Family::HfFalcon => Source::NeoxQkv(format!(
                    "transformer.h.{i}.self_attention.query_key_value.{suffix}"
                )),
            }
        };
        push(
            lit("attn.qkv.weight"),
            vec![q_rows + 2 * kv_rows, e],
            qkv("weight"),
        );
        if cfg.qkv_bias {
            push(
                lit("attn.qkv.bias"),
                vec![q_rows + 2 * kv_rows],
                qkv("bias"),
            );
        }
        if cfg.norm_qk {
            // Per head (Qwen3) or over all heads (OLMo-2).
            let (nq, nk) = if cfg.extras.norm_qk_all_heads {
                (q_rows, kv_rows)
            } else {
                (hs, hs)
            };
            for (ours, theirs, n) in [("norm_q", "q_norm", nq), ("norm_k", "k_norm", nk)] {
                let stored = match cfg.family {
                    Family::LitGpt => lit(&format!("attn.{ours}")),
                    Family::HfGptNeox => format!("gpt_neox.layers.{i}.attention.{theirs}"),
                    _ => format!("model.layers.{i}.self_attn.{theirs}"),
                };
                push(
                    lit(&format!("attn.{ours}.weight")),
                    vec![n],
                    one(format!("{stored}.weight")),
                );
                if layer_norm {
                    push(
                        lit(&format!("attn.{ours}.bias")),
                        vec![n],
                        one(format!("{stored}.bias")),
                    );
                }
            }
        }
        push(
            lit("attn.proj.weight"),
            vec![e, q_rows],
            one(format!("{proj}.weight")),
        );
        if cfg.attn_out_bias {
            push(lit("attn.proj.bias"), vec![e], one(format!("{proj}.bias")));
        }

        // Gemma 2 in HF layout: `post_attention_layernorm` is the post-attention norm and the MLP's
        // input norm is `pre_feedforward_layernorm`.
        let hf = cfg.family != Family::LitGpt;
        let gemma2_hf = hf && cfg.extras.post_attention_norm;
        let hf_layer = format!("model.layers.{i}");
        let n2 = if gemma2_hf {
            Some(format!("{hf_layer}.pre_feedforward_layernorm"))
        } else {
            n2
        };
        if !cfg.shared_attention_norm && !cfg.extras.no_norm_2 {
            let n2 = n2.unwrap_or_else(|| lit("norm_2"));
            push(lit("norm_2.weight"), vec![e], one(format!("{n2}.weight")));
            if layer_norm {
                push(lit("norm_2.bias"), vec![e], one(format!("{n2}.bias")));
            }
        }
        for (on, ours, theirs) in [
            (
                cfg.extras.post_attention_norm,
                "post_attention_norm",
                "post_attention_layernorm",
            ),
            (
                cfg.extras.post_mlp_norm,
                "post_mlp_norm",
                "post_feedforward_layernorm",
            ),
        ] {
            if on {
                let stored = if hf {
                    format!("{hf_layer}.{theirs}")
                } else {
                    lit(ours)
                };
                push(
                    lit(&format!("{ours}.weight")),
                    vec![e],
                    one(format!("{stored}.weight")),
                );
                if layer_norm {
                    push(
                        lit(&format!("{ours}.bias")),
                        vec![e],
                        one(format!("{stored}.bias")),
                    );
                }
            }
        }

        let inter = cfg.intermediate_size;
        let fcs: Vec<(&str, &String)> = match cfg.mlp {
            MlpKind::GptNeox => vec![("mlp.fc", &mlp[0])],
            MlpKind::Llama | MlpKind::Gemma => vec![("mlp.fc_1", &mlp[1]), ("mlp.fc_2", &mlp[2])],
        };
        for (k, (ours, stored)) in fcs.into_iter().enumerate() {
            let src = if cfg.family == Family::HfPhi3 {
                Source::Rows(
                    format!("model.layers.{i}.mlp.gate_up_proj.weight"),
                    k * inter,
                    2 * inter,
                )
            } else {
                one(format!("{stored}.weight"))
            };
            push(lit(&format!("{ours}.weight")), vec![inter, e], src);
            if cfg.mlp_bias {
                push(
                    lit(&format!("{ours}.bias")),
                    vec![inter],
                    one(format!("{stored}.bias")),
                );
            }
        }
        push(
            lit("mlp.proj.weight"),
            vec![e, inter],
            one(format!("{mlp_proj}.weight")),
        );
        if cfg.mlp_bias {
            push(
                lit("mlp.proj.bias"),
                vec![e],
                one(format!("{mlp_proj}.bias")),
            );
        }
    }

    push(
        "transformer.ln_f.weight".into(),
        vec![e],
        one(format!("{ln_f}.weight")),
    );
    if layer_norm {
        push(
            "transformer.ln_f.bias".into(),
            vec![e],
            one(format!("{ln_f}.bias")),
        );
    }
    let head_src = if cfg.tie_embeddings {
        Source::Tied(format!("{head}.weight"), format!("{wte}.weight"))
    } else {
        one(format!("{head}.weight"))
    };
    push(
        "lm_head.weight".into(),
        vec![cfg.padded_vocab_size, e],
        head_src,
    );
    if cfg.lm_head_bias {
        push(
            "lm_head.bias".into(),
            vec![cfg.padded_vocab_size],
            one(format!("{head}.bias")),
        );
    }
    t
}

mod hf;
mod read;

pub use hf::{hf_family, hf_modules, hf_targets, linears, HfTarget};
pub use read::{
    head_is_the_embedding, load, load_check, neox_to_grouped, read_entry, with_entry_in_place,
};

#[cfg(test)]
mod tests;
