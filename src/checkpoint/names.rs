//! THE name table: which stored tensor (or tensors) feed each model parameter, in which layout.
//!
//! Model parameters are named as in LitGPT (`transformer.h.{i}.attn.qkv.weight`, ...) and are
//! stored `[out, in]` like PyTorch. Each format maps onto those names; fused q/k/v always ends up
//! as LitGPT's `[Q | K | V]` row blocks. [`load`] checks that every parameter is present with the
//! right shape and that no stored tensor is left unused.

use std::collections::HashMap;

use super::weights::{HostTensor, Values, WeightFiles};
use crate::config::{Family, LinearId, MlpKind, ModelConfig, NormKind};
use crate::error::{Error, Result};

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

/// Stored tensors that carry no weights (rotary caches, attention masks).
fn ignorable(family: Family, name: &str) -> bool {
    match family {
        Family::LitGpt => false,
        Family::HfLlama | Family::HfPhi | Family::HfPhi3 | Family::HfFalcon => {
            name.ends_with(".rotary_emb.inv_freq")
        }
        Family::HfGptNeox => {
            name.ends_with(".rotary_emb.inv_freq")
                || name.ends_with(".attention.bias")
                || name.ends_with(".attention.masked_bias")
        }
    }
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

/// Reads every parameter of `cfg` from `files`, checking presence, shapes and leftovers.
pub fn load(cfg: &ModelConfig, files: &WeightFiles) -> Result<HashMap<String, HostTensor>> {
    load_check(cfg, files)?;
    let mut out = HashMap::new();
    for entry in table(cfg) {
        let t = read_entry(cfg, files, &entry)?;
        out.insert(entry.name, t);
    }
    Ok(out)
}

/// Checks presence and shapes of every parameter and that no stored tensor is left unused,
/// reading metadata only.
pub fn load_check(cfg: &ModelConfig, files: &WeightFiles) -> Result<()> {
    let stored = files.tensors();
    let table = table(cfg);

    // Check every source first (cheap: metadata only), so errors come before any reading.
    let check = |name: &str, expected: &[usize]| -> Result<()> {
        match stored.get(name) {
            None => Err(Error::MissingTensor {
                path: files.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
            }),
            Some(m) if m.shape != expected => Err(Error::ShapeMismatch {
                path: files.file_of(name),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: m.shape.clone(),
            }),
            Some(_) => Ok(()),
        }
    };
    let hs = cfg.head_size;
    let parts = |shape: &[usize]| -> [Vec<usize>; 3] {
        let rest: Vec<usize> = shape[1..].to_vec();
        let mk = |rows: usize| [vec![rows], rest.clone()].concat();
        [
            mk(cfg.n_head * hs),
            mk(cfg.n_query_groups * hs),
            mk(cfg.n_query_groups * hs),
        ]
    };
    for entry in &table {
        match &entry.source {
            Source::One(n) | Source::NeoxQkv(n) => check(n, &entry.shape)?,
            Source::Rows(n, _, total) => {
                check(n, &[vec![*total], entry.shape[1..].to_vec()].concat())?
            }
            Source::QkvConcat(names) => {
                for (n, s) in names.iter().zip(parts(&entry.shape)) {
                    check(n, &s)?;
                }
            }
            Source::Tied(head, wte) => {
                if stored.contains_key(head) {
                    check(head, &entry.shape)?
                } else {
                    check(wte, &entry.shape)?
                }
            }
        }
    }
    let extra: Vec<&String> = stored
        .keys()
        .filter(|k| !ignorable(cfg.family, k))
        .filter(|k| {
            !table.iter().any(|e| match &e.source {
                Source::One(n) | Source::NeoxQkv(n) | Source::Rows(n, ..) => n == *k,
                Source::QkvConcat(ns) => ns.contains(k),
                Source::Tied(a, b) => a == *k || b == *k,
            })
        })
        .collect();
    if !extra.is_empty() {
        return Err(Error::UnexpectedTensors {
            path: files.path.clone(),
            count: extra.len(),
            examples: extra
                .iter()
                .take(3)
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }

    Ok(())
}

/// Whether the output head is read from the embedding's own stored values: tied in the config
/// with no separate head stored, or a head stored as a view of the embedding's storage (as
/// `torch.save` writes a LitGPT conversion of a tied model, whose config has no tying flag).
/// The model then holds one matrix for both, without reading or comparing twice.
pub fn head_is_the_embedding(cfg: &ModelConfig, files: &WeightFiles) -> bool {
    let t = table(cfg);
    let source = |name: &str| t.iter().find(|e| e.name == name).map(|e| &e.source);
    match (source("lm_head.weight"), source("transformer.wte.weight")) {
        (Some(Source::Tied(head, wte)), _) => {
            !files.tensors().contains_key(head) || files.same_values(head, wte)
        }
        // Untied in the config (LitGPT's configs have no such flag) but saved as one storage.
        (Some(Source::One(head)), Some(Source::One(wte))) => files.same_values(head, wte),
        _ => false,
    }
}

/// Calls `f(parts, shape)` with a parameter read in place from the file — one stored tensor,
/// separate q, k, v projections, a slice of rows, or regrouped GPT-NeoX rows, as pieces stacked
/// by rows (see [`WeightFiles::with_in_place_rows`]); `Ok(false)` when it has to be converted
/// or cannot be lent (then use [`read_entry`]).
pub fn with_entry_in_place(
    cfg: &ModelConfig,
    files: &WeightFiles,
    entry: &Entry,
    f: &mut dyn FnMut(&[Values<'_>], &[usize]),
) -> Result<bool> {
    let stored = match &entry.source {
        Source::One(n) => n,
        Source::Tied(head, wte) if files.tensors().contains_key(head) => head,
        Source::Tied(_, wte) => wte,
        // The three projections lent as they are: no stacked (and, for 16-bit files, widened)
        // copy before the transpose.
        Source::QkvConcat([q, k, v]) => {
            return files.with_in_place_stacked(&[q, k, v], |parts, shape| f(parts, shape))
        }
        // A slice of a stored tensor (Phi-3's `gate_up_proj` halves).
        Source::Rows(n, offset, _) => {
            let rows = Some(*offset..offset + entry.shape.first().copied().unwrap_or(0));
            return files.with_in_place_rows(&[(n, rows)], |parts, shape| f(parts, shape));
        }
        // GPT-NeoX / Falcon's per-group `[q.., k, v]` rows, lent in `[Q | K | V]` order (the
        // pieces `neox_to_grouped` copies).
        Source::NeoxQkv(n) => {
            let (hs, groups) = (cfg.head_size, cfg.n_query_groups.max(1));
            let qn = cfg.n_head / groups * hs;
            let chunk = qn + 2 * hs;
            let pieces: Vec<(&str, Option<std::ops::Range<usize>>)> =
                [(0, qn), (qn, hs), (qn + hs, hs)]
                    .iter()
                    .flat_map(|&(at, len)| {
                        (0..groups)
                            .map(move |g| (n.as_str(), Some(g * chunk + at..g * chunk + at + len)))
                    })
                    .collect();
            return files.with_in_place_rows(&pieces, |parts, shape| f(parts, shape));
        }
    };
    files.with_in_place(stored, |d, shape| f(&[d], shape))
}

/// Reads one parameter (already checked by [`load`] or [`load_check`]) in the model's layout.
pub fn read_entry(cfg: &ModelConfig, files: &WeightFiles, entry: &Entry) -> Result<HostTensor> {
    let stored = files.tensors();
    let hs = cfg.head_size;
    Ok(match &entry.source {
        Source::One(n) => files.read_f32(n)?,
        Source::Rows(n, offset, _) => {
            let t = files.read_f32(n)?;
            let row: usize = t.shape[1..].iter().product();
            HostTensor {
                shape: entry.shape.clone(),
                data: t.data[offset * row..(offset + entry.shape[0]) * row].to_vec(),
            }
        }
        Source::Tied(head, wte) => {
            if stored.contains_key(head) {
                files.read_f32(head)?
            } else {
                files.read_f32(wte)?
            }
        }
        Source::QkvConcat(names) => {
            let mut data = Vec::with_capacity(entry.shape.iter().product());
            for n in names {
                data.extend(files.read_f32(n)?.data);
            }
            HostTensor {
                shape: entry.shape.clone(),
                data,
            }
        }
        Source::NeoxQkv(n) => {
            let t = files.read_f32(n)?;
            let row = t.shape[1..].iter().product::<usize>();
            HostTensor {
                shape: t.shape.clone(),
                data: neox_to_grouped(&t.data, row, cfg.n_head, cfg.n_query_groups, hs),
            }
        }
    })
}

/// GPT-NeoX stores q/k/v interleaved per group: `[q_g0 (q_per_kv heads), k_g0, v_g0, q_g1, ...]`.
/// Returns LitGPT's `[Q | K | V]` row order. `row` is the length of one row (1 for a bias).
pub fn neox_to_grouped(
    data: &[f32],
    row: usize,
    n_head: usize,
    groups: usize,
    hs: usize,
) -> Vec<f32> {
    let q_per_kv = n_head / groups;
    let chunk = (q_per_kv + 2) * hs * row;
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..groups {
        let c = &data[g * chunk..(g + 1) * chunk];
        let qn = q_per_kv * hs * row;
        q.extend_from_slice(&c[..qn]);
        k.extend_from_slice(&c[qn..qn + hs * row]);
        v.extend_from_slice(&c[qn + hs * row..]);
    }
    q.extend(k);
    q.extend(v);
    q
}

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

#[cfg(test)]
mod tests;
