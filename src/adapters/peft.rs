//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors` (or the legacy
//! `adapter_model.bin`). Keys are `base_model.model.<module>.lora_{A,B}.weight`; scale is
//! `alpha / r` (`alpha / √r` with rsLoRA), with per-module `rank_pattern` / `alpha_pattern`.
//! Features graftlm cannot honour are refused by name, never half-loaded.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::discover::AdapterLocation;
use super::lora::{expect_shape, place_rows_of, Adapter, LowRankUpdate};
use crate::checkpoint::{names, HostTensor, WeightFiles};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The parts of `adapter_config.json` graftlm uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftConfig {
    pub r: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
    pub target_modules: Targets,
    pub layers_to_transform: Option<Vec<usize>>,
    /// Modules PEFT skips even when `target_modules` names them.
    pub exclude_modules: Option<Targets>,
    pub base: Option<String>,
}

/// PEFT `target_modules`.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Module names matched by suffix.
    List(Vec<String>),
    /// A regex matched against the whole module path.
    Regex(String),
    /// `all-linear`: every linear but the output head.
    AllLinear,
}

/// A PEFT module regex (matched whole, as `re.fullmatch`), refused by field name if invalid.
fn checked_regex(s: &str, field: &str, refuse: &dyn Fn(&str, String) -> Error) -> Result<String> {
    Regex::new(&format!("^(?:{s})$"))
        .map(|_| s.to_string())
        .map_err(|e| refuse(field, format!("invalid regular expression: {e}")))
}

/// Reads and checks `adapter_config.json`.
pub fn config(loc: &AdapterLocation) -> Result<PeftConfig> {
    let path = loc.dir.join("adapter_config.json");
    let text = crate::file::read_to_string(&path)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::parse(&path, e))?;
    let refuse = |field: &str, msg: String| Error::UnsupportedConfig {
        path: path.clone(),
        field: field.to_string(),
        msg,
    };
    if let Some(t) = v.get("peft_type").and_then(Value::as_str) {
        if t != "LORA" {
            return Err(refuse(
                "peft_type",
                format!("`{t}` adapters are not supported (only LORA)"),
            ));
        }
    }
    if v.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(refuse(
            "use_dora",
            "DoRA adapters are not supported yet".into(),
        ));
    }
    if let Some(m) = v.get("modules_to_save") {
        if !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(refuse(
                "modules_to_save",
                format!("{m} (fully trained modules) is not supported yet"),
            ));
        }
    }
    if v.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        return Err(refuse(
            "fan_in_fan_out",
            "true (GPT-2 style Conv1D) is not supported".into(),
        ));
    }
    match v.get("bias").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(b) => {
            return Err(refuse(
                "bias",
                format!("`{b}` (trained biases) is not supported yet"),
            ))
        }
    }
    for f in [
        "loftq_config",
        "layer_replication",
        "megatron_config",
        "trainable_token_indices",
        "target_parameters",
        "alora_invocation_tokens",
    ] {
        if let Some(x) = v.get(f) {
            if !x.is_null() && x.as_object().is_none_or(|o| !o.is_empty()) {
                return Err(refuse(f, format!("{x} is not supported")));
            }
        }
    }
    let r = v.get("r").and_then(Value::as_u64).unwrap_or(8) as usize;
    let alpha = v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
    if !alpha.is_finite() {
        return Err(refuse(
            "lora_alpha",
            format!("{alpha} is not a finite number"),
        ));
    }
    let pattern = |k: &str| -> Vec<(String, Value)> {
        v.get(k)
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
            .unwrap_or_default()
    };
    let rank_pattern = pattern("rank_pattern")
        .into_iter()
        .map(|(k, x)| {
            x.as_u64()
                .map(|n| (k.clone(), n as usize))
                .ok_or_else(|| refuse("rank_pattern", format!("{k}: {x}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let alpha_pattern = pattern("alpha_pattern")
        .into_iter()
        .map(|(k, x)| {
            x.as_f64()
                .filter(|n| n.is_finite())
                .map(|n| (k.clone(), n))
                .ok_or_else(|| refuse("alpha_pattern", format!("{k}: {x}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let target_modules = match v.get("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => Targets::AllLinear,
        Some(Value::String(s)) => Targets::Regex(checked_regex(s, "target_modules", &refuse)?),
        Some(Value::Array(a)) => Targets::List(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        None | Some(Value::Null) => Targets::List(vec![]),
        Some(other) => return Err(refuse("target_modules", format!("{other}"))),
    };
    let layers_to_transform = match v.get("layers_to_transform") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as usize]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_u64)
                .map(|x| x as usize)
                .collect(),
        ),
        Some(other) => return Err(refuse("layers_to_transform", format!("{other}"))),
    };
    let exclude_modules = match v.get("exclude_modules") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Targets::Regex(checked_regex(
            s,
            "exclude_modules",
            &refuse,
        )?)),
        Some(Value::Array(a)) => Some(Targets::List(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        )),
        Some(other) => return Err(refuse("exclude_modules", format!("{other}"))),
    };
    Ok(PeftConfig {
        exclude_modules,
        r,
        alpha,
        use_rslora: v
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        rank_pattern,
        alpha_pattern,
        target_modules,
        layers_to_transform,
        base: v
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// PEFT's `get_pattern_key`: an exact key, else a key matching the end of the module path.
fn pattern_value<T: Copy>(patterns: &[(String, T)], module: &str) -> Option<T> {
    if let Some((_, v)) = patterns.iter().find(|(k, _)| k == module) {
        return Some(*v);
    }
    patterns.iter().find_map(|(k, v)| {
        let re = Regex::new(&format!(r"^(.*\.)?{k}$")).ok()?;
        re.is_match(module).then_some(*v)
    })
}

fn layer_of(module: &str) -> Option<usize> {
    module.split('.').find_map(|p| p.parse().ok())
}

/// Whether PEFT would put LoRA on `module` (for checking that every target has weights).
fn targeted(cfg: &PeftConfig, module: &str, head: &str) -> Result<bool> {
    let hit = match &cfg.target_modules {
        Targets::AllLinear => module != head,
        Targets::List(l) => l
            .iter()
            .any(|t| module == t || module.ends_with(&format!(".{t}"))),
        Targets::Regex(r) => {
            let re = Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| Error::invalid("target_modules", e))?;
            re.is_match(module)
        }
    };
    let layer_ok = match (&cfg.layers_to_transform, layer_of(module)) {
        (Some(ls), Some(i)) => ls.contains(&i),
        (Some(_), None) => false,
        (None, _) => true,
    };
    Ok(hit && layer_ok)
}

/// Reads a PEFT LoRA adapter for a base with configuration `cfg`.
pub fn read(loc: &AdapterLocation, model: &ModelConfig, name: &str) -> Result<Adapter> {
    let pc = config(loc)?;
    let files = WeightFiles::open(&loc.weights)?;
    let path = &loc.weights;
    let stored = files.tensors();
    let mut modules: BTreeMap<String, ()> = BTreeMap::new();
    for n in stored.keys() {
        let Some(rest) = n.strip_prefix("base_model.model.") else {
            return Err(Error::UnexpectedTensors {
                path: path.clone(),
                count: 1,
                examples: format!("`{n}` (not a PEFT LoRA key)"),
            });
        };
        if rest.contains("lora_embedding_") {
            return Err(Error::Unsupported(format!(
                "{}: `{n}`: embedding LoRA is not supported yet",
                path.display()
            )));
        }
        if rest.contains("lora_magnitude_vector") {
            return Err(Error::Unsupported(format!(
                "{}: `{n}`: DoRA is not supported yet",
                path.display()
            )));
        }
        let module = rest
            .strip_suffix(".lora_A.weight")
            .or_else(|| rest.strip_suffix(".lora_B.weight"))
            .ok_or_else(|| Error::UnexpectedTensors {
                path: path.clone(),
                count: 1,
                examples: format!(
                    "`{n}` (not a LoRA factor; trained biases or saved modules are not supported)"
                ),
            })?;
        modules.insert(module.to_string(), ());
    }
    let head = names::hf_modules(model).pop().unwrap_or_default();
    // Every module PEFT would have adapted must have weights.
    for m in names::hf_modules(model) {
        if targeted(&pc, &m, &head)? && !modules.contains_key(&m) {
            return Err(Error::MissingTensor {
                path: path.clone(),
                name: format!("base_model.model.{m}.lora_A.weight"),
                expected: vec![],
            });
        }
    }
    if let Targets::List(l) = &pc.target_modules {
        let all = names::hf_modules(model);
        for t in l {
            if !all.iter().any(|m| m == t || m.ends_with(&format!(".{t}"))) {
                return Err(Error::UnsupportedConfig {
                    path: loc.dir.join("adapter_config.json"),
                    field: "target_modules".into(),
                    msg: format!(
                        "`{t}` matches no linear layer of the base model (another architecture?)"
                    ),
                });
            }
        }
    }
    let linears: BTreeMap<String, [usize; 2]> = names::linears(model).into_iter().collect();
    let mut parts: BTreeMap<String, Vec<LowRankUpdate>> = BTreeMap::new();
    for module in modules.keys() {
        let an = format!("base_model.model.{module}.lora_A.weight");
        let bn = format!("base_model.model.{module}.lora_B.weight");
        let targets = names::hf_targets(model, module);
        let Some(first) = targets.first() else {
            return Err(Error::UnexpectedTensors {
                path: path.clone(),
                count: 1,
                examples: format!("`{an}`: the base model has no module `{module}` — an adapter for another base model?"),
            });
        };
        let (am, bm) = match (stored.get(&an), stored.get(&bn)) {
            (Some(a), Some(b)) => (a, b),
            (None, _) => {
                return Err(Error::MissingTensor {
                    path: path.clone(),
                    name: an,
                    expected: vec![],
                })
            }
            (_, None) => {
                return Err(Error::MissingTensor {
                    path: path.clone(),
                    name: bn,
                    expected: vec![],
                })
            }
        };
        let inp = linears[&first.linear][1];
        let rows: usize = targets.iter().map(|t| t.rows).sum();
        let r = am.shape.first().copied().unwrap_or(0);
        let want_r = pattern_value(&pc.rank_pattern, module).unwrap_or(pc.r);
        expect_shape(path, &an, &am.shape, &[want_r, inp])?;
        expect_shape(path, &bn, &bm.shape, &[rows, want_r])?;
        if r == 0 {
            return Err(Error::BadTensor {
                path: path.clone(),
                name: an,
                msg: "rank 0".into(),
            });
        }
        let alpha = pattern_value(&pc.alpha_pattern, module).unwrap_or(pc.alpha);
        let scale = if pc.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        } as f32;
        if !scale.is_finite() {
            return Err(Error::UnsupportedConfig {
                path: loc.dir.join("adapter_config.json"),
                field: "lora_alpha".into(),
                msg: format!("{alpha} / r {r} is not a finite f32 scale"),
            });
        }
        let mut a = files.read_f32(&an)?;
        let mut b = files.read_f32(&bn)?;
        if first.neox_qkv {
            b = HostTensor {
                shape: b.shape.clone(),
                data: names::neox_to_grouped(
                    &b.data,
                    r,
                    model.n_head,
                    model.n_query_groups,
                    model.head_size,
                ),
            };
        }
        for (i, t) in targets.iter().enumerate() {
            let out = linears[&t.linear][0];
            // The last target takes `A` itself (most modules have one target), and `B` too when
            // it is the whole of its linear's output (scaled in place: no second copy).
            let last = i + 1 == targets.len();
            let whole = t.src_row_offset == 0 && t.row_offset == 0 && t.rows == out;
            let b_t = if last && whole && b.data.len() == out * r {
                let mut data = std::mem::take(&mut b.data);
                data.iter_mut().for_each(|x| *x *= scale);
                HostTensor {
                    shape: vec![out, r],
                    data,
                }
            } else {
                let block = &b.data[t.src_row_offset * r..(t.src_row_offset + t.rows) * r];
                place_rows_of(block, r, out, t.row_offset, scale)
            };
            let a_t = if last {
                std::mem::take(&mut a)
            } else {
                a.clone()
            };
            parts
                .entry(t.linear.clone())
                .or_default()
                .push(LowRankUpdate { a: a_t, b: b_t });
        }
    }
    let mut updates = BTreeMap::new();
    for (lin, p) in parts {
        if let Some(u) = LowRankUpdate::concat(p) {
            updates.insert(lin, u);
        }
    }
    if updates.is_empty() {
        return Err(Error::BadTensor {
            path: path.clone(),
            name: "(all)".into(),
            msg: "the file holds no LoRA factors".into(),
        });
    }
    Ok(Adapter {
        name: name.to_string(),
        format: loc.format,
        path: loc.weights.clone(),
        dir: loc.dir.clone(),
        step: loc.step,
        recorded_base: pc.base.clone(),
        r: pc.r,
        alpha: pc.alpha,
        updates,
        llama: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_keys_match_like_peft() {
        let p = vec![
            ("q_proj".to_string(), 2usize),
            ("model.layers.1.mlp.up_proj".to_string(), 3),
        ];
        assert_eq!(
            pattern_value(&p, "model.layers.0.self_attn.q_proj"),
            Some(2)
        );
        assert_eq!(pattern_value(&p, "model.layers.1.mlp.up_proj"), Some(3));
        assert_eq!(pattern_value(&p, "model.layers.0.mlp.up_proj"), None);
        assert_eq!(pattern_value(&p, "model.layers.0.self_attn.xq_proj"), None);
    }
}
