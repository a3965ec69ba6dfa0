//! LitGPT LoRA checkpoints: `lit_model.pth.lora` (`{"model": {...lora_A, lora_B}}`) with
//! `hyperparameters.yaml`. The fused `attn.qkv` LoRA is block-wise: rows `[j·r, (j+1)·r)` of
//! `lora_A` pair with projection j's rows of `lora_B`, over the enabled projections
//! (`litgpt/lora.py`, `LoRAQKVLinear`). Scale = alpha / r.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::discover::AdapterLocation;
use super::lora::{expect_shape, Adapter, LowRankUpdate};
use crate::checkpoint::{names, WeightFiles};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The LoRA settings LitGPT records in `hyperparameters.yaml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LitLoraHparams {
    pub r: Option<usize>,
    pub alpha: Option<f64>,
    /// query, key, value
    pub qkv: Option<[bool; 3]>,
    pub checkpoint_dir: Option<String>,
}

/// Reads `hyperparameters.yaml` of an adapter folder (all fields optional).
pub fn hparams(dir: &Path) -> Result<LitLoraHparams> {
    let path = dir.join("hyperparameters.yaml");
    if !path.is_file() {
        return Ok(LitLoraHparams::default());
    }
    let text = crate::file::read_to_string(&path)?;
    let v: Value = serde_yaml::from_str(&text).map_err(|e| Error::parse(&path, e))?;
    let get_bool = |k: &str| v.get(k).and_then(Value::as_bool);
    let qkv = match (
        get_bool("lora_query"),
        get_bool("lora_key"),
        get_bool("lora_value"),
    ) {
        (None, None, None) => None,
        (q, k, val) => Some([q.unwrap_or(false), k.unwrap_or(false), val.unwrap_or(false)]),
    };
    let alpha = v.get("lora_alpha").and_then(Value::as_f64);
    if let Some(a) = alpha.filter(|a| !a.is_finite()) {
        return Err(Error::UnsupportedConfig {
            path,
            field: "lora_alpha".into(),
            msg: format!("{a} is not a finite number"),
        });
    }
    Ok(LitLoraHparams {
        r: v.get("lora_r").and_then(Value::as_u64).map(|x| x as usize),
        alpha,
        qkv,
        checkpoint_dir: v
            .get("checkpoint_dir")
            .and_then(|c| c.as_str().map(str::to_string)),
    })
}

/// Reads a LitGPT LoRA adapter for a base with configuration `cfg`.
pub fn read(loc: &AdapterLocation, cfg: &ModelConfig, name: &str) -> Result<Adapter> {
    let hp = hparams(&loc.dir)?;
    let files = WeightFiles::open(&loc.weights)?;
    let path = &loc.weights;
    let stored = files.tensors();
    for (n, m) in stored {
        if !(n.ends_with(".lora_A") || n.ends_with(".lora_B")) {
            return Err(Error::UnexpectedTensors {
                path: path.clone(),
                count: 1,
                examples: format!("`{n}` {:?} (not a LoRA factor)", m.shape),
            });
        }
    }
    let linears = names::linears(cfg);
    let mut used = 0usize;
    let mut updates = BTreeMap::new();
    let mut rank_seen: Option<usize> = None;
    for (lin, [out, inp]) in &linears {
        let (an, bn) = (format!("{lin}.lora_A"), format!("{lin}.lora_B"));
        let (Some(am), Some(bm)) = (stored.get(&an), stored.get(&bn)) else {
            if stored.contains_key(&an) || stored.contains_key(&bn) {
                let missing = if stored.contains_key(&an) { bn } else { an };
                return Err(Error::MissingTensor {
                    path: path.clone(),
                    name: missing,
                    expected: vec![],
                });
            }
            continue;
        };
        used += 2;
        if bm.shape.len() != 2 || am.shape.len() != 2 {
            return Err(Error::BadTensor {
                path: path.clone(),
                name: an,
                msg: format!(
                    "LoRA factors must be 2-D, got {:?} and {:?}",
                    am.shape, bm.shape
                ),
            });
        }
        let r = bm.shape[1];
        if let Some(hr) = hp.r {
            expect_shape(path, &bn, &bm.shape, &[bm.shape[0], hr])?;
        }
        if r == 0 {
            return Err(Error::BadTensor {
                path: path.clone(),
                name: bn,
                msg: "rank 0".into(),
            });
        }
        match rank_seen {
            Some(r0) if r0 != r => {
                return Err(Error::ShapeMismatch {
                    path: path.clone(),
                    name: bn,
                    expected: vec![bm.shape[0], r0],
                    found: bm.shape.clone(),
                })
            }
            _ => rank_seen = Some(r),
        }
        let alpha = hp.alpha.unwrap_or(r as f64);
        let scale = (alpha / r as f64) as f32;
        if !scale.is_finite() {
            return Err(Error::UnsupportedConfig {
                path: loc.dir.join("hyperparameters.yaml"),
                field: "lora_alpha".into(),
                msg: format!("{alpha} / r {r} is not a finite f32 scale"),
            });
        }
        let a = files.read_f32(&an)?;
        let b = files.read_f32(&bn)?;
        let update = if lin.ends_with("attn.qkv") {
            let q = cfg.n_head * cfg.head_size;
            let kv = cfg.n_query_groups * cfg.head_size;
            let sizes = [q, kv, kv];
            let enabled = match hp.qkv {
                Some(e) => e,
                None => infer_qkv(am.shape[0] / r, bm.shape[0], sizes).ok_or_else(|| Error::BadTensor {
                    path: path.clone(),
                    name: bn.clone(),
                    msg: "cannot tell which of query/key/value are adapted; hyperparameters.yaml (lora_query/key/value) is missing".into(),
                })?,
            };
            let n = enabled.iter().filter(|&&e| e).count();
            let rows: usize = sizes
                .iter()
                .zip(enabled)
                .filter(|(_, e)| *e)
                .map(|(s, _)| s)
                .sum();
            expect_shape(path, &an, &am.shape, &[r * n, *inp])?;
            expect_shape(path, &bn, &bm.shape, &[rows, r])?;
            if n == 0 {
                return Err(Error::BadTensor {
                    path: path.clone(),
                    name: an.clone(),
                    msg: "no projection enabled".into(),
                });
            }
            // LitGPT stacks the enabled projections' `A`s by rows (`[n·r, in]`), which is the
            // fused update's `A` as it is; its `B` (`[out, n·r]`) holds each projection's rows
            // (scaled) at that projection's output rows and rank columns.
            let offsets = [0, q, q + kv];
            let rn = n * r;
            let mut placed = vec![0f32; out * rn];
            let mut b_row = 0;
            for (j, k) in (0..3).filter(|&k| enabled[k]).enumerate() {
                let src = &b.data[b_row * r..(b_row + sizes[k]) * r];
                for (i, row) in src.chunks_exact(r).enumerate() {
                    let at = (offsets[k] + i) * rn + j * r;
                    for (d, &x) in placed[at..at + r].iter_mut().zip(row) {
                        *d = x * scale;
                    }
                }
                b_row += sizes[k];
            }
            LowRankUpdate {
                a,
                b: crate::checkpoint::HostTensor {
                    shape: vec![*out, rn],
                    data: placed,
                },
            }
        } else {
            expect_shape(path, &an, &am.shape, &[r, *inp])?;
            expect_shape(path, &bn, &bm.shape, &[*out, r])?;
            let mut b = b;
            b.data.iter_mut().for_each(|x| *x *= scale);
            LowRankUpdate { a, b }
        };
        updates.insert(lin.clone(), update);
    }
    if used != stored.len() {
        let extra: Vec<String> = stored
            .keys()
            .filter(|k| {
                let lin = k.trim_end_matches(".lora_A").trim_end_matches(".lora_B");
                !linears.iter().any(|(l, _)| l == lin)
            })
            .take(3)
            .map(|k| format!("`{k}`"))
            .collect();
        return Err(Error::UnexpectedTensors {
            path: path.clone(),
            count: stored.len() - used,
            examples: format!("{} — an adapter for another base model?", extra.join(", ")),
        });
    }
    if updates.is_empty() {
        return Err(Error::BadTensor {
            path: path.clone(),
            name: "(all)".into(),
            msg: "the file holds no LoRA factors".into(),
        });
    }
    let r = rank_seen.unwrap_or(0);
    Ok(Adapter {
        name: name.to_string(),
        format: loc.format,
        path: loc.weights.clone(),
        dir: loc.dir.clone(),
        step: loc.step,
        recorded_base: hp.checkpoint_dir.clone(),
        r,
        alpha: hp.alpha.unwrap_or(r as f64),
        updates,
        llama: Default::default(),
    })
}

/// Which of q/k/v are enabled, from the number of blocks and the total rows, when unambiguous.
fn infer_qkv(n: usize, rows: usize, sizes: [usize; 3]) -> Option<[bool; 3]> {
    let mut found = None;
    for mask in 1u8..8 {
        let e = [mask & 1 != 0, mask & 2 != 0, mask & 4 != 0];
        let count = e.iter().filter(|&&x| x).count();
        let total: usize = sizes
            .iter()
            .zip(e)
            .filter(|(_, x)| *x)
            .map(|(s, _)| s)
            .sum();
        if count == n && total == rows {
            if found.is_some() {
                return None;
            }
            found = Some(e);
        }
    }
    found
}
