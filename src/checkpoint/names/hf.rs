//! What adapters target: the model's linears by internal name, and where a Hugging Face
//! module's output lands in them (PEFT target matching).

use crate::config::{Family, LinearId, MlpKind, ModelConfig};

/// The linear layers of the model that adapters can target: internal name, `[out, in]`.
pub fn linears(cfg: &ModelConfig) -> Vec<(String, [usize; 2])> {
    let e = cfg.n_embd;
    let mut v = Vec::new();
    let mut push = |id: LinearId, shape: [usize; 2]| v.push((id.to_string(), shape));
    for i in 0..cfg.n_layer {
        push(LinearId::Qkv(i), [cfg.qkv_size(), e]);
        push(LinearId::Proj(i), [e, cfg.n_head * cfg.head_size]);
        match cfg.mlp {
            MlpKind::GptNeox => push(LinearId::Fc(i), [cfg.intermediate_size, e]),
            MlpKind::Llama | MlpKind::Gemma => {
                push(LinearId::Gate(i), [cfg.intermediate_size, e]);
                push(LinearId::Up(i), [cfg.intermediate_size, e]);
            }
        }
        push(LinearId::MlpProj(i), [e, cfg.intermediate_size]);
    }
    push(LinearId::Head, [cfg.padded_vocab_size, e]);
    v
}

/// Where a Hugging Face module's output lands in the model: a column block of one linear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTarget {
    /// Internal linear name (`transformer.h.3.attn.qkv`).
    pub linear: String,
    /// First output row of the block within the linear's `[out, in]` weight.
    pub row_offset: usize,
    /// Number of output rows of the block.
    pub rows: usize,
    /// First row of the block within the module's own output (Phi-3 `gate_up_proj` feeds two
    /// linears: rows `0..inter` go to `mlp.fc_1`, rows `inter..` to `mlp.fc_2`).
    pub src_row_offset: usize,
    /// Output rows are GPT-NeoX per-group interleaved and must be regrouped.
    pub neox_qkv: bool,
}

/// The HF naming family of a configuration (LitGPT checkpoints are mapped by their structure).
pub fn hf_family(cfg: &ModelConfig) -> Family {
    match cfg.family {
        Family::LitGpt => {
            if cfg.mlp == MlpKind::GptNeox && !cfg.mlp_bias {
                Family::HfFalcon
            } else if cfg.shared_attention_norm {
                Family::HfPhi
            } else if cfg.mlp == MlpKind::GptNeox {
                Family::HfGptNeox
            } else {
                Family::HfLlama
            }
        }
        f => f,
    }
}

/// Maps an HF module path (`model.layers.3.self_attn.q_proj`) to the parts of the model it
/// computes (one block of one linear, or two for Phi-3's fused `gate_up_proj`). Empty for modules
/// the model does not have.
pub fn hf_targets(cfg: &ModelConfig, module: &str) -> Vec<HfTarget> {
    hf_target(cfg, module).unwrap_or_default()
}

fn hf_target(cfg: &ModelConfig, module: &str) -> Option<Vec<HfTarget>> {
    let family = hf_family(cfg);
    let q = cfg.n_head * cfg.head_size;
    let kv = cfg.n_query_groups * cfg.head_size;
    let whole = |linear: String, rows: usize| HfTarget {
        linear,
        row_offset: 0,
        rows,
        src_row_offset: 0,
        neox_qkv: false,
    };
    let e = cfg.n_embd;
    let inter = cfg.intermediate_size;
    if module == "lm_head" || (family == Family::HfGptNeox && module == "embed_out") {
        return Some(vec![whole("lm_head".into(), cfg.padded_vocab_size)]);
    }
    let (layer_prefix, rest) = match family {
        Family::HfGptNeox => module.strip_prefix("gpt_neox.layers.")?.split_once('.')?,
        Family::HfFalcon => module.strip_prefix("transformer.h.")?.split_once('.')?,
        _ => module.strip_prefix("model.layers.")?.split_once('.')?,
    };
    let i: usize = layer_prefix.parse().ok()?;
    if i >= cfg.n_layer {
        return None;
    }
    let lit = |s: &str| format!("transformer.h.{i}.{s}");
    let qkv = |row_offset: usize, rows: usize| HfTarget {
        linear: lit("attn.qkv"),
        row_offset,
        rows,
        src_row_offset: 0,
        neox_qkv: false,
    };
    if (family, rest) == (Family::HfPhi3, "mlp.gate_up_proj") {
        return Some(vec![
            whole(lit("mlp.fc_1"), inter),
            HfTarget {
                src_row_offset: inter,
                ..whole(lit("mlp.fc_2"), inter)
            },
        ]);
    }
    let t = match (family, rest) {
        (Family::HfPhi3, "self_attn.qkv_proj") => qkv(0, q + 2 * kv),
        (Family::HfPhi3, "self_attn.o_proj") => whole(lit("attn.proj"), e),
        (Family::HfPhi3, "mlp.down_proj") => whole(lit("mlp.proj"), e),
        (Family::HfLlama | Family::HfPhi, "self_attn.q_proj") => qkv(0, q),
        (Family::HfLlama | Family::HfPhi, "self_attn.k_proj") => qkv(q, kv),
        (Family::HfLlama | Family::HfPhi, "self_attn.v_proj") => qkv(q + kv, kv),
        (Family::HfLlama, "self_attn.o_proj") | (Family::HfPhi, "self_attn.dense") => {
            whole(lit("attn.proj"), e)
        }
        (Family::HfLlama, "mlp.gate_proj") => whole(lit("mlp.fc_1"), inter),
        (Family::HfLlama, "mlp.up_proj") => whole(lit("mlp.fc_2"), inter),
        (Family::HfLlama, "mlp.down_proj") | (Family::HfPhi, "mlp.fc2") => {
            whole(lit("mlp.proj"), e)
        }
        (Family::HfPhi, "mlp.fc1") => whole(lit("mlp.fc"), inter),
        (Family::HfGptNeox, "attention.query_key_value") => HfTarget {
            neox_qkv: true,
            ..qkv(0, q + 2 * kv)
        },
        (Family::HfGptNeox, "attention.dense") => whole(lit("attn.proj"), e),
        (Family::HfGptNeox, "mlp.dense_h_to_4h") => whole(lit("mlp.fc"), inter),
        (Family::HfGptNeox, "mlp.dense_4h_to_h") => whole(lit("mlp.proj"), e),
        (Family::HfFalcon, "self_attention.query_key_value") => HfTarget {
            neox_qkv: true,
            ..qkv(0, q + 2 * kv)
        },
        (Family::HfFalcon, "self_attention.dense") => whole(lit("attn.proj"), e),
        (Family::HfFalcon, "mlp.dense_h_to_4h") => whole(lit("mlp.fc"), inter),
        (Family::HfFalcon, "mlp.dense_4h_to_h") => whole(lit("mlp.proj"), e),
        _ => return None,
    };
    Some(vec![t])
}

/// All HF module paths of the model's linears (what PEFT's `target_modules` can name).
pub fn hf_modules(cfg: &ModelConfig) -> Vec<String> {
    let family = hf_family(cfg);
    let mut v = Vec::new();
    for i in 0..cfg.n_layer {
        let names: &[&str] = match family {
            Family::HfGptNeox => &[
                "attention.query_key_value",
                "attention.dense",
                "mlp.dense_h_to_4h",
                "mlp.dense_4h_to_h",
            ],
            Family::HfFalcon => &[
                "self_attention.query_key_value",
                "self_attention.dense",
                "mlp.dense_h_to_4h",
                "mlp.dense_4h_to_h",
            ],
            Family::HfPhi3 => &[
                "self_attn.qkv_proj",
                "self_attn.o_proj",
                "mlp.gate_up_proj",
                "mlp.down_proj",
            ],
            Family::HfPhi => &[
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.dense",
                "mlp.fc1",
                "mlp.fc2",
            ],
            _ => &[
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ],
        };
        let prefix = match family {
            Family::HfGptNeox => "gpt_neox.layers",
            Family::HfFalcon => "transformer.h",
            _ => "model.layers",
        };
        for n in names {
            v.push(format!("{prefix}.{i}.{n}"));
        }
    }
    v.push(
        if family == Family::HfGptNeox {
            "embed_out"
        } else {
            "lm_head"
        }
        .to_string(),
    );
    v
}
