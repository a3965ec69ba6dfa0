//! Reading a model's parameters through the name table: every name and shape checked first
//! (metadata only), then one tensor at a time, as stored or lent in place, with GPT-NeoX's
//! grouped q/k/v reordered to LitGPT's `[Q | K | V]`.

use std::collections::HashMap;

use super::{layouts, table, Entry, Source};
use crate::checkpoint::weights::{HostTensor, Values, WeightFiles};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Reads every parameter of `cfg` from `files`, checking presence, shapes and leftovers.
pub fn load(cfg: &ModelConfig, files: &WeightFiles) -> Result<HashMap<String, HostTensor>> {
    load_check(cfg, files)?;
    let mut out = HashMap::new();
    for entry in table(cfg)? {
        let t = read_entry(cfg, files, &entry)?;
        out.insert(entry.name, t);
    }
    Ok(out)
}

/// Checks presence and shapes of every parameter and that no stored tensor is left unused,
/// reading metadata only.
pub fn load_check(cfg: &ModelConfig, files: &WeightFiles) -> Result<()> {
    let stored = files.tensors();
    let table = table(cfg)?;
    let ignored = layouts::of(cfg).ignored;

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
        // Stored tensors that carry no weights (rotary caches, attention masks).
        .filter(|k| !ignored.iter().any(|end| k.ends_with(end)))
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
    let Ok(t) = table(cfg) else {
        return false;
    };
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
