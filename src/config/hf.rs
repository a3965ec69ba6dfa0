//! Hugging Face `config.json` → [`ModelConfig`]: the fields every family reads here, the rest
//! by each family's reader (`hf/families.rs`).
//!
//! HF configs carry many training-only fields, so unknown keys are ignored; the fields that change
//! the forward pass are all read, and values graftlm cannot honour are errors naming the field.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::Value;

use super::litgpt::{rope_scaling_from, Fields};
use super::{Arch, Family, MlpKind, ModelConfig, NormKind};
use crate::error::{Error, Result};

mod families;

/// What every family's reader starts from: the configuration with the fields all of them read
/// (the rest as a plain Llama has them: each reader sets what differs), and the raw values some
/// of them interpret.
pub(super) struct Common {
    pub base: ModelConfig,
    pub model_type: String,
    pub hidden_act: Option<String>,
    /// `rope_parameters.partial_rotary_factor` (transformers ≥ 5).
    pub rp_partial: Option<f64>,
}

/// Whether `hidden_act` (default `allowed[0]`) is a tanh-approximated GELU (`tanh`), an exact
/// activation of `allowed`, or an error naming the field.
pub(super) fn act(
    f: &Fields<'_>,
    hidden_act: &Option<String>,
    model_type: &str,
    allowed: &[&str],
    tanh: &[&str],
) -> Result<bool> {
    let a = hidden_act.clone().unwrap_or_else(|| allowed[0].to_string());
    if tanh.contains(&a.as_str()) {
        Ok(true)
    } else if allowed.contains(&a.as_str()) {
        Ok(false)
    } else {
        Err(f.err(
            "hidden_act",
            format!("`{a}` is not supported for {model_type}"),
        ))
    }
}

pub(super) fn parse(text: &str, path: &Path, default_name: &str) -> Result<ModelConfig> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::parse(path, e))?;
    let serde_json::Value::Object(obj) = json else {
        return Err(Error::parse(path, "expected a JSON object"));
    };
    // Re-express as YAML values so the LitGPT field helpers can be shared.
    let mut map = BTreeMap::new();
    for (k, v) in obj {
        let v: Value = serde_yaml::to_value(&v).map_err(|e| Error::parse(path, e))?;
        map.insert(k, v);
    }
    let mut f = Fields::new(map, path);
    let model_type = f
        .string("model_type")?
        .ok_or_else(|| Error::UnknownArchitecture {
            path: path.to_path_buf(),
            arch: "(config.json has no model_type)".into(),
        })?;
    let Some(arch) = Arch::from_hf_model_type(&model_type) else {
        return Err(Error::UnknownArchitecture {
            path: path.to_path_buf(),
            arch: model_type,
        });
    };
    let name = f
        .string("_name_or_path")?
        .and_then(|p| {
            p.trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default_name.to_string());

    let need = |f: &mut Fields<'_>, key: &str| -> Result<usize> {
        f.usize(key)?
            .ok_or_else(|| f.err(key, "required field is missing"))
    };
    let n_embd = need(&mut f, "hidden_size")?;
    let n_layer = need(&mut f, "num_hidden_layers")?;
    let n_head = need(&mut f, "num_attention_heads")?;
    let padded_vocab_size = need(&mut f, "vocab_size")?;
    let intermediate_size = if model_type == "falcon" {
        f.usize("ffn_hidden_size")?.unwrap_or(4 * n_embd)
    } else {
        need(&mut f, "intermediate_size")?
    };
    let block_size = f.usize("max_position_embeddings")?.unwrap_or(2048);
    let head_size = match f.usize("head_dim")? {
        Some(h) => h,
        None if n_head > 0 && n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(f.err(
                "num_attention_heads",
                format!(
                    "hidden_size ({n_embd}) is not a multiple of num_attention_heads ({n_head})"
                ),
            ))
        }
    };
    let n_query_groups = f.usize("num_key_value_heads")?.unwrap_or(n_head);
    let tie_embeddings = f
        .bool("tie_word_embeddings")?
        .unwrap_or(matches!(model_type.as_str(), "gemma" | "gemma2" | "falcon"));
    // transformers ≥ 5 nests RoPE settings in `rope_parameters`; older files keep them top-level.
    let rope_params = f.take("rope_parameters");
    let rp = |k: &str| {
        rope_params
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_f64)
    };
    let (rp_theta, rp_partial) = (rp("rope_theta"), rp("partial_rotary_factor"));
    let rope_scaling = match (f.take("rope_scaling"), &rope_params) {
        (Some(v), _) => rope_scaling_from(&f, "rope_scaling", &v)?,
        (None, Some(v)) => rope_scaling_from(&f, "rope_parameters", v)?,
        (None, None) => None,
    };
    let hidden_act = f.string("hidden_act")?;
    let rope_base = f.f64("rope_theta")?.or(rp_theta).unwrap_or(10000.0);

    let base = ModelConfig {
        name,
        arch,
        family: Family::HfLlama,
        block_size,
        n_layer,
        n_embd,
        n_head,
        head_size,
        n_query_groups,
        padded_vocab_size,
        norm: NormKind::RmsNorm { unit_offset: false },
        norm_eps: 1e-6,
        mlp: MlpKind::Llama,
        intermediate_size,
        gelu_tanh: false,
        qkv_bias: false,
        attn_out_bias: false,
        mlp_bias: false,
        lm_head_bias: false,
        parallel_residual: false,
        shared_attention_norm: false,
        rope_n_elem: head_size,
        rope_base,
        rope_condense_ratio: 1,
        rope_scaling,
        scale_embeddings: false,
        tie_embeddings,
        sliding_window: None,
        norm_qk: false,
        extras: Default::default(),
    };
    let c = Common {
        base,
        model_type,
        hidden_act,
        rp_partial,
    };
    families::read(arch, &mut f, c)
}
