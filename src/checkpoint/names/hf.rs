//! What adapters target: the model's linears by internal name, and where a Hugging Face
//! module's output lands in them (PEFT target matching).

use super::layouts::{self, Part};
use crate::config::{LinearId, MlpKind, ModelConfig};

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

/// Maps an HF module path (`model.layers.3.self_attn.q_proj`) to the parts of the model it
/// computes (one block of one linear, or two for Phi-3's fused `gate_up_proj`), by the name
/// table of the base's architecture. Empty for modules the model does not have.
pub fn hf_targets(cfg: &ModelConfig, module: &str) -> Vec<HfTarget> {
    hf_target(cfg, module).unwrap_or_default()
}

fn hf_target(cfg: &ModelConfig, module: &str) -> Option<Vec<HfTarget>> {
    let layout = layouts::hf(cfg);
    let q = cfg.n_head * cfg.head_size;
    let kv = cfg.n_query_groups * cfg.head_size;
    let (e, inter) = (cfg.n_embd, cfg.intermediate_size);
    let whole = |id: LinearId, rows: usize| HfTarget {
        linear: id.to_string(),
        row_offset: 0,
        rows,
        src_row_offset: 0,
        neox_qkv: false,
    };
    // PEFT names the head `lm_head` whatever the layout calls it.
    if module == "lm_head" {
        return Some(vec![whole(LinearId::Head, cfg.padded_vocab_size)]);
    }
    let (part, layer) = layout.part_of(module)?;
    let i = match layer {
        Some(i) if i < cfg.n_layer => i,
        Some(_) => return None,
        None if part == Part::Head => {
            return Some(vec![whole(LinearId::Head, cfg.padded_vocab_size)])
        }
        None => return None,
    };
    let qkv = |row_offset: usize, rows: usize| HfTarget {
        row_offset,
        ..whole(LinearId::Qkv(i), rows)
    };
    let gated = matches!(cfg.mlp, MlpKind::Llama | MlpKind::Gemma);
    let t = match part {
        Part::Qkv => HfTarget {
            neox_qkv: layout.grouped_qkv,
            ..qkv(0, q + 2 * kv)
        },
        Part::Q => qkv(0, q),
        Part::K => qkv(q, kv),
        Part::V => qkv(q + kv, kv),
        Part::Proj => whole(LinearId::Proj(i), e),
        Part::Fc if !gated => whole(LinearId::Fc(i), inter),
        Part::Gate if gated => whole(LinearId::Gate(i), inter),
        Part::Up if gated => whole(LinearId::Up(i), inter),
        Part::GateUp if gated => {
            return Some(vec![
                whole(LinearId::Gate(i), inter),
                HfTarget {
                    src_row_offset: inter,
                    ..whole(LinearId::Up(i), inter)
                },
            ])
        }
        Part::Down => whole(LinearId::MlpProj(i), e),
        _ => return None,
    };
    Some(vec![t])
}

/// All HF module paths of the model's linears (what PEFT's `target_modules` can name), the
/// head last.
pub fn hf_modules(cfg: &ModelConfig) -> Vec<String> {
    let layout = layouts::hf(cfg);
    let mut v: Vec<String> = (0..cfg.n_layer).flat_map(|i| layout.linears(i)).collect();
    v.extend(layout.name(Part::Head, 0));
    v
}
