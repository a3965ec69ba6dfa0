//! LitGPT `model_config.yaml` → [`ModelConfig`], following `litgpt/config.py` `Config.__post_init__`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::{Arch, Family, MlpKind, ModelConfig, NormKind, RopeScaling};
use crate::error::{Error, Result};

/// Typed access to a YAML/JSON-like mapping that remembers which keys were read.
pub(super) struct Fields<'a> {
    map: BTreeMap<String, Value>,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    pub(super) fn new(map: BTreeMap<String, Value>, path: &'a Path) -> Self {
        Self { map, path }
    }

    pub(super) fn err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::UnsupportedConfig {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            msg: msg.to_string(),
        }
    }

    /// Removes and returns a key; `None` for absent or YAML null.
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    pub(super) fn usize(&mut self, key: &str) -> Result<Option<usize>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => usize::try_from(n)
                    .map(Some)
                    .map_err(|_| self.err(key, format!("{n} is too large"))),
                None => match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && (0.0..1e15).contains(&f) => Ok(Some(f as usize)),
                    _ => Err(self.err(key, format!("expected a non-negative integer, got {v:?}"))),
                },
            },
        }
    }

    pub(super) fn f64(&mut self, key: &str) -> Result<Option<f64>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v:?}"))),
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v:?}"))),
        }
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, got {v:?}"))),
        }
    }

    /// Fails when `key` is present with a value other than `default` (a feature graftlm lacks).
    pub(super) fn expect_default(&mut self, key: &str, default: &Value, what: &str) -> Result<()> {
        if let Some(v) = self.take(key) {
            if &v != default {
                return Err(self.err(key, format!("{v:?} is not supported ({what})")));
            }
        }
        Ok(())
    }

    /// Fails when `key` is present and not null.
    pub(super) fn expect_absent(&mut self, key: &str, what: &str) -> Result<()> {
        if let Some(v) = self.take(key) {
            return Err(self.err(key, format!("{v:?} is not supported ({what})")));
        }
        Ok(())
    }

    /// Drops keys that carry no meaning for inference.
    pub(super) fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.map.remove(*k);
        }
    }

    pub(super) fn remaining(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

pub(super) fn rope_scaling_from(
    fields: &Fields<'_>,
    key: &str,
    v: &Value,
) -> Result<Option<RopeScaling>> {
    let get = |k: &str| v.get(k).and_then(Value::as_f64);
    let rope_type = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str);
    if v.get("beta_fast").is_some() || v.get("beta_slow").is_some() || rope_type == Some("yarn") {
        return Err(fields.err(key, "YaRN RoPE scaling is not supported yet"));
    }
    match rope_type {
        Some("default") => return Ok(None),
        Some("linear") | Some("llama3") | None => {}
        Some(other) => return Err(fields.err(key, format!("rope type `{other}` is not supported"))),
    }
    let has_llama3 = v.get("low_freq_factor").is_some() || v.get("high_freq_factor").is_some();
    let Some(factor) = get("factor") else {
        return if rope_type.is_none() && !has_llama3 {
            Ok(None)
        } else {
            Err(fields.err(key, "missing `factor`"))
        };
    };
    if has_llama3 || rope_type == Some("llama3") {
        let need = |k: &str| get(k).ok_or_else(|| fields.err(key, format!("missing `{k}`")));
        let original = get("original_max_seq_len")
            .or_else(|| get("original_max_position_embeddings"))
            .ok_or_else(|| fields.err(key, "missing `original_max_seq_len`"))?;
        return Ok(Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_seq_len: original,
        }));
    }
    Ok(Some(RopeScaling::Linear { factor }))
}

pub(super) fn parse(text: &str, path: &Path) -> Result<ModelConfig> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| Error::parse(path, e))?;
    let map = match value {
        Value::Mapping(m) => m,
        Value::Null => return Err(Error::parse(path, "the file is empty")),
        other => {
            return Err(Error::parse(
                path,
                format!("expected a mapping, got {other:?}"),
            ))
        }
    };
    let mut entries = BTreeMap::new();
    for (k, v) in map {
        match k {
            Value::String(s) => {
                entries.insert(s, v);
            }
            other => return Err(Error::parse(path, format!("non-string key {other:?}"))),
        }
    }
    let mut f = Fields::new(entries, path);

    let hf_name = f
        .take("hf_config")
        .and_then(|h| h.get("name").and_then(Value::as_str).map(str::to_string));
    let name = f
        .string("name")?
        .filter(|s| !s.is_empty())
        .or(hf_name)
        .unwrap_or_default();
    let block_size = f.usize("block_size")?.unwrap_or(4096);
    let n_layer = f.usize("n_layer")?.unwrap_or(16);
    let n_embd = f.usize("n_embd")?.unwrap_or(4096);
    let vocab_size = f.usize("vocab_size")?.unwrap_or(50254);
    let padding_multiple = f.usize("padding_multiple")?.unwrap_or(512);
    let padded_vocab_size = match f.usize("padded_vocab_size")? {
        Some(p) => p,
        None => {
            if padding_multiple == 0 {
                return Err(f.err("padding_multiple", "must be greater than 0"));
            }
            vocab_size.div_ceil(padding_multiple) * padding_multiple
        }
    };
    let norm_class = f
        .string("norm_class_name")?
        .unwrap_or_else(|| "LayerNorm".into());
    let norm = match norm_class.as_str() {
        "LayerNorm" if name.contains("OLMo") => {
            return Err(f.err(
                "norm_class_name",
                "OLMo's LayerNorm without affine weights is not supported yet",
            ))
        }
        "LayerNorm" => NormKind::LayerNorm,
        "RMSNorm" => NormKind::RmsNorm {
            unit_offset: name.contains("Gemma"),
        },
        other => return Err(f.err("norm_class_name", format!("`{other}` is not supported"))),
    };
    let norm_eps = f.f64("norm_eps")?.unwrap_or(1e-5);
    let n_head = f.usize("n_head")?.unwrap_or(32);
    let head_size = match f.usize("head_size")? {
        Some(h) => h,
        None => {
            if n_head == 0 || n_embd % n_head != 0 {
                return Err(f.err(
                    "n_head",
                    format!("n_embd ({n_embd}) is not a multiple of n_head ({n_head})"),
                ));
            }
            n_embd / n_head
        }
    };
    let n_query_groups = f.usize("n_query_groups")?.unwrap_or(n_head);
    let attn_bias = f.bool("attn_bias")?.unwrap_or(false);
    let bias = f.bool("bias")?.unwrap_or(true);
    let rope_base = f.f64("rope_base")?.unwrap_or(10000.0);
    let rotary_percentage = f.f64("rotary_percentage")?.unwrap_or(0.25);
    let rope_condense_ratio = f.usize("rope_condense_ratio")?.unwrap_or(1);
    let rope_scaling = match f.take("rope_adjustments") {
        None => None,
        Some(v) => rope_scaling_from(&f, "rope_adjustments", &v)?,
    };
    let mlp_class = f
        .string("mlp_class_name")?
        .unwrap_or_else(|| "GptNeoxMLP".into());
    let mlp = match mlp_class.as_str() {
        "GptNeoxMLP" => MlpKind::GptNeox,
        "LLaMAMLP" => MlpKind::Llama,
        "GemmaMLP" => MlpKind::Gemma,
        other => return Err(f.err("mlp_class_name", format!("`{other}` is not supported"))),
    };
    let intermediate_size = match f.usize("intermediate_size")? {
        Some(i) => i,
        None if mlp == MlpKind::GptNeox => 4 * n_embd,
        None => return Err(f.err("intermediate_size", "must be set for this mlp_class_name")),
    };
    let gelu_tanh = match f.string("gelu_approximate")?.as_deref() {
        None | Some("none") => false,
        Some("tanh") => true,
        Some(other) => return Err(f.err("gelu_approximate", format!("`{other}` is not supported"))),
    };
    let parallel_residual = f.bool("parallel_residual")?.unwrap_or(true);
    let shared_attention_norm = f.bool("shared_attention_norm")?.unwrap_or(false);
    let scale_embeddings = f.bool("scale_embeddings")?.unwrap_or(false);
    let lm_head_bias = f.bool("lm_head_bias")?.unwrap_or(false);

    let f_ = Value::Bool(false);
    let norm_qk = f.bool("norm_qk")?.unwrap_or(false);
    let norm_qk_all_heads = match f.string("norm_qk_type")?.as_deref() {
        None | Some("default") => false,
        Some("olmo2") => true,
        Some(other) => return Err(f.err("norm_qk_type", format!("`{other}` is not supported"))),
    };
    let post_attention_norm = f.bool("post_attention_norm")?.unwrap_or(false);
    let post_mlp_norm = f.bool("post_mlp_norm")?.unwrap_or(false);
    let no_norm_1 = !f.bool("norm_1")?.unwrap_or(true);
    let no_norm_2 = !f.bool("norm_2")?.unwrap_or(true);
    f.expect_default("rope_interleave", &f_, "interleaved RoPE")?;
    let attention_scores_scalar = f.f64("attention_scores_scalar")?;
    let attention_softcap = f.f64("attention_logit_softcapping")?;
    let final_softcap = f.f64("final_logit_softcapping")?;
    f.expect_absent("latent_attention", "multi-head latent attention")?;
    f.expect_absent("rope_local_base_freq", "local RoPE base")?;
    f.expect_absent("rope_indices", "per-layer RoPE")?;
    f.expect_absent("moe_intermediate_size", "mixture of experts")?;
    f.expect_absent("n_shared_expert", "mixture of experts")?;
    f.expect_absent("n_expert_groups", "mixture of experts")?;
    f.expect_absent("n_topk_groups", "mixture of experts")?;
    f.expect_absent("n_topk_scores_per_group", "mixture of experts")?;
    f.expect_absent("first_k_dense_replace", "mixture of experts")?;
    let zero = Value::Number(0.into());
    f.expect_default("n_expert", &zero, "mixture of experts")?;
    f.expect_default("n_expert_per_token", &zero, "mixture of experts")?;
    f.expect_default("norm_topk_prob", &f_, "mixture of experts")?;
    if let Some(v) = f.f64("routed_scaling_factor")? {
        if v != 1.0 {
            return Err(f.err(
                "routed_scaling_factor",
                format!("{v} is not supported (mixture of experts)"),
            ));
        }
    }
    let sliding_window = f.usize("sliding_window_size")?;
    let sliding_window_layers = match f.take("sliding_window_indices") {
        None => None,
        Some(v) => {
            let flags: Option<Vec<bool>> = v
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .map(|x| x.as_u64().map(|n| n == 1))
                        .collect::<Option<Vec<bool>>>()
                })
                .unwrap_or(None);
            match flags {
                // A window on every layer is the plain (Mistral) case.
                Some(f_) if f_.len() >= n_layer && f_[..n_layer].iter().all(|x| *x) => None,
                Some(f_) if f_.len() >= n_layer => Some(f_[..n_layer].to_vec()),
                _ => {
                    return Err(f.err(
                        "sliding_window_indices",
                        format!("expected {n_layer} or more 0/1 entries, got {v:?}"),
                    ))
                }
            }
        }
    };
    // LitGPT's adapter Config subclasses add these; they describe the adapter, not the base.
    f.ignore(&[
        "padding_multiple",
        "adapter_prompt_length",
        "adapter_start_layer",
    ]);
    let rest = f.remaining();
    if let Some(first) = rest.first() {
        return Err(f.err(
            first,
            "unknown field (LitGPT's Config does not have it either)",
        ));
    }

    let rope_n_elem = (rotary_percentage * head_size as f64) as usize;
    let mut cfg = ModelConfig {
        name,
        // (Decided from the structure below: LitGPT configs name the model, not its kind.)
        arch: Arch::Llama,
        family: Family::LitGpt,
        block_size,
        n_layer,
        n_embd,
        n_head,
        head_size,
        n_query_groups,
        padded_vocab_size,
        norm,
        norm_eps,
        mlp,
        intermediate_size,
        gelu_tanh,
        qkv_bias: bias || attn_bias,
        attn_out_bias: bias,
        mlp_bias: bias,
        lm_head_bias,
        parallel_residual,
        shared_attention_norm,
        rope_n_elem,
        rope_base,
        rope_condense_ratio,
        rope_scaling,
        scale_embeddings,
        tie_embeddings: false,
        sliding_window,
        norm_qk,
        extras: super::Extras {
            post_attention_norm,
            post_mlp_norm,
            attention_softcap,
            final_softcap,
            attention_scores_scalar,
            sliding_window_layers,
            no_norm_1,
            no_norm_2,
            norm_qk_all_heads,
        },
    };
    cfg.arch = Arch::from_structure(&cfg);
    Ok(cfg)
}
