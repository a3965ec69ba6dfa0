//! LitGPT LLaMA-Adapter checkpoints: v1 `lit_model.pth.adapter` (a gated prefix per layer from
//! `adapter_start_layer`: `attn.adapter_wte.weight` `[prompt_length, n_embd]` and
//! `attn.gating_factor` `[1, 1, n_head, 1]`) and v2 `lit_model.pth.adapter_v2` (plus
//! `adapter_scale`/`adapter_bias` on every linear and trained `norm_1`/`norm_2`/`ln_f`).
//! Prompt length and start layer come from the tensors and are cross-checked with the
//! `model_config.yaml` saved beside them.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::discover::{AdapterFormat, AdapterLocation};
use super::litgpt::hparams;
use super::lora::{expect_shape, Adapter, LlamaAdapterParts};
use crate::checkpoint::{names, HostTensor, WeightFiles};
use crate::config::{ModelConfig, NormKind};
use crate::error::{Error, Result};

/// Reads a LitGPT LLaMA-Adapter (v1 or v2) for a base with configuration `cfg`.
pub fn read(loc: &AdapterLocation, cfg: &ModelConfig, name: &str) -> Result<Adapter> {
    let files = WeightFiles::open(&loc.weights)?;
    let path = &loc.weights;
    let v2 = loc.format == AdapterFormat::LitGptAdapterV2;
    let linears: BTreeMap<String, [usize; 2]> = names::linears(cfg).into_iter().collect();
    let mut parts = LlamaAdapterParts::default();
    let mut wte: BTreeMap<usize, HostTensor> = BTreeMap::new();
    let mut gates: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut scales: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut biases: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut norm_w: BTreeMap<String, HostTensor> = BTreeMap::new();
    let mut norm_b: BTreeMap<String, HostTensor> = BTreeMap::new();
    let unexpected = |n: &str, why: &str| Error::UnexpectedTensors {
        path: path.clone(),
        count: 1,
        examples: format!("`{n}` ({why})"),
    };
    let layer_of = |n: &str| -> Option<usize> {
        n.strip_prefix("transformer.h.")?
            .split('.')
            .next()?
            .parse()
            .ok()
            .filter(|&i| i < cfg.n_layer)
    };
    let e = cfg.n_embd;
    for (n, m) in files.tensors() {
        if let Some(i) = n
            .strip_suffix(".attn.adapter_wte.weight")
            .and_then(|_| layer_of(n))
        {
            if m.shape.len() != 2 || m.shape[1] != e {
                return Err(Error::ShapeMismatch {
                    path: path.clone(),
                    name: n.clone(),
                    expected: vec![m.shape.first().copied().unwrap_or(0), e],
                    found: m.shape.clone(),
                });
            }
            wte.insert(i, files.read_f32(n)?);
        } else if let Some(i) = n
            .strip_suffix(".attn.gating_factor")
            .and_then(|_| layer_of(n))
        {
            // [1, 1, n_head, 1] (current) or [1, n_head, 1, 1] (older LitGPT): n_head values either way.
            let ok = m.shape.len() == 4 && m.shape.iter().product::<usize>() == cfg.n_head;
            if !ok {
                expect_shape(path, n, &m.shape, &[1, 1, cfg.n_head, 1])?;
            }
            gates.insert(i, files.read_f32(n)?.data);
        } else if let Some(lin) = n
            .strip_suffix(".adapter_scale")
            .or_else(|| n.strip_suffix(".adapter_bias"))
        {
            let lin = lin.strip_suffix(".linear").unwrap_or(lin);
            let Some([out, _]) = linears.get(lin) else {
                return Err(unexpected(
                    n,
                    "no such linear in the base — an adapter for another base model?",
                ));
            };
            if !v2 {
                return Err(unexpected(n, "v2 parameter in a v1 adapter file"));
            }
            expect_shape(path, n, &m.shape, &[*out])?;
            let data = files.read_f32(n)?.data;
            if n.ends_with(".adapter_scale") {
                scales.insert(lin.to_string(), data);
            } else {
                biases.insert(lin.to_string(), data);
            }
        } else if let Some(norm) = n
            .strip_suffix(".weight")
            .or_else(|| n.strip_suffix(".bias"))
        {
            let is_norm = norm == "transformer.ln_f"
                || (layer_of(norm).is_some()
                    && (norm.ends_with(".norm_1") || norm.ends_with(".norm_2")));
            if !is_norm || !v2 {
                return Err(unexpected(n, "not a LLaMA-Adapter parameter"));
            }
            if norm.ends_with(".norm_2") && cfg.shared_attention_norm {
                return Err(unexpected(
                    n,
                    "the base shares norm_1 with the MLP and has no norm_2",
                ));
            }
            if n.ends_with(".bias") && cfg.norm != NormKind::LayerNorm {
                return Err(unexpected(n, "RMSNorm has no bias"));
            }
            expect_shape(path, n, &m.shape, &[e])?;
            let t = files.read_f32(n)?;
            if n.ends_with(".weight") {
                norm_w.insert(norm.to_string(), t);
            } else {
                norm_b.insert(norm.to_string(), t);
            }
        } else {
            return Err(unexpected(n, "not a LLaMA-Adapter parameter"));
        }
    }
    // Prefix: the same layers carry an embedding and a gate, from the start layer to the last.
    if wte.keys().ne(gates.keys()) {
        let missing = wte
            .keys()
            .chain(gates.keys())
            .find(|i| !(wte.contains_key(i) && gates.contains_key(i)));
        return Err(Error::MissingTensor {
            path: path.clone(),
            name: format!(
                "transformer.h.{}.attn.(adapter_wte.weight|gating_factor)",
                missing.copied().unwrap_or(0)
            ),
            expected: vec![],
        });
    }
    let start = wte.keys().next().copied().unwrap_or(cfg.n_layer);
    let length = wte.values().next().map(|t| t.shape[0]).unwrap_or(0);
    for (i, t) in &wte {
        expect_shape(
            path,
            &format!("transformer.h.{i}.attn.adapter_wte.weight"),
            &t.shape,
            &[length, e],
        )?;
    }
    if wte.len() != cfg.n_layer.saturating_sub(start) {
        return Err(Error::BadTensor {
            path: path.clone(),
            name: "attn.adapter_wte".into(),
            msg: format!(
                "adapted layers {:?} are not every layer from {start} on",
                wte.keys().collect::<Vec<_>>()
            ),
        });
    }
    check_recorded(loc, length, start, !wte.is_empty())?;
    for (i, t) in wte {
        parts
            .prefix
            .insert(i, (t, gates.remove(&i).unwrap_or_default()));
    }
    parts.prompt_length = length;
    parts.start_layer = start;
    for (lin, s) in scales {
        let b = biases.remove(&lin).ok_or_else(|| Error::MissingTensor {
            path: path.clone(),
            name: format!("{lin}.adapter_bias"),
            expected: vec![s.len()],
        })?;
        parts.affine.insert(lin, (s, b));
    }
    if let Some(lin) = biases.keys().next() {
        return Err(Error::MissingTensor {
            path: path.clone(),
            name: format!("{lin}.adapter_scale"),
            expected: vec![],
        });
    }
    for (norm, w) in norm_w {
        let b = norm_b.remove(&norm);
        if cfg.norm == NormKind::LayerNorm && b.is_none() {
            return Err(Error::MissingTensor {
                path: path.clone(),
                name: format!("{norm}.bias"),
                expected: vec![e],
            });
        }
        parts.norms.insert(norm, (w, b));
    }
    if parts.is_empty() {
        return Err(Error::BadTensor {
            path: path.clone(),
            name: "(all)".into(),
            msg: "the file holds no LLaMA-Adapter parameters".into(),
        });
    }
    let hp = hparams(&loc.dir)?;
    Ok(Adapter {
        name: name.to_string(),
        format: loc.format,
        path: loc.weights.clone(),
        dir: loc.dir.clone(),
        step: loc.step,
        recorded_base: hp.checkpoint_dir,
        r: 0,
        alpha: 0.0,
        updates: BTreeMap::new(),
        llama: parts,
    })
}

/// Cross-checks prompt length and start layer with the `model_config.yaml` saved with the adapter.
fn check_recorded(
    loc: &AdapterLocation,
    length: usize,
    start: usize,
    has_prefix: bool,
) -> Result<()> {
    let p = loc.dir.join("model_config.yaml");
    let Ok(text) = crate::file::read_to_string(&p) else {
        return Ok(());
    };
    let v: Value = serde_yaml::from_str(&text).map_err(|e| Error::parse(&p, e))?;
    let get = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
    let bad = |field: &str, rec: usize, found: usize| Error::UnsupportedConfig {
        path: p.clone(),
        field: field.into(),
        msg: format!("records {rec} but {} holds {found}", loc.weights.display()),
    };
    if has_prefix {
        if let Some(rec) = get("adapter_prompt_length").filter(|&r| r != length) {
            return Err(bad("adapter_prompt_length", rec, length));
        }
        if let Some(rec) = get("adapter_start_layer").filter(|&r| r != start) {
            return Err(bad("adapter_start_layer", rec, start));
        }
    }
    Ok(())
}
