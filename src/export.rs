//! Exporting a merged model (base + adapters folded in) as a Hugging Face checkpoint:
//! `model.safetensors` + `config.json` + tokenizer files + `graftlm_merge.json` (which base, its
//! fingerprint, which adapters at which scales). Works on the host one tensor at a time, so peak
//! memory stays near the largest tensor, and writes to a temporary file renamed at the end, so an
//! interrupted export never leaves a half file under the final name.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::builder::Plan;
use crate::checkpoint::names::{self, Entry, Source};
use crate::checkpoint::WeightFiles;
use crate::config::{Family, MlpKind, ModelConfig, NormKind, RopeScaling};
use crate::error::{Error, Result};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
    pub fingerprint: String,
}

/// FNV-1a over the parameter names and shapes and the first values of a few tensors: cheap, and
/// different for any two bases that could be confused.
pub fn fingerprint(cfg: &ModelConfig, files: &WeightFiles) -> Result<String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let table = names::table(cfg);
    for e in &table {
        eat(e.name.as_bytes());
        for d in &e.shape {
            eat(&(*d as u64).to_le_bytes());
        }
    }
    for e in table.iter().filter(|e| {
        e.name == "transformer.wte.weight"
            || e.name == "lm_head.weight"
            || e.name.ends_with("attn.qkv.weight")
    }) {
        let t = names::read_entry(cfg, files, e)?;
        for v in t.data.iter().take(256) {
            eat(&v.to_le_bytes());
        }
    }
    Ok(format!("fnv1a64:{h:016x}"))
}

/// Output tensors (HF name, shape) an internal entry becomes under the HF table `hf`.
fn outputs(hf: &Entry, cfg: &ModelConfig, keep_tied: bool) -> Vec<(String, Vec<usize>)> {
    let rest = hf.shape[1..].to_vec();
    match &hf.source {
        Source::One(n) | Source::NeoxQkv(n) => vec![(n.clone(), hf.shape.clone())],
        // Fused row blocks (Phi-3 gate_up_proj) are refused before writing starts.
        Source::Rows(..) => vec![],
        Source::QkvConcat([q, k, v]) => {
            let (qr, kvr) = (
                cfg.n_head * cfg.head_size,
                cfg.n_query_groups * cfg.head_size,
            );
            vec![
                (q.clone(), [vec![qr], rest.clone()].concat()),
                (k.clone(), [vec![kvr], rest.clone()].concat()),
                (v.clone(), [vec![kvr], rest].concat()),
            ]
        }
        Source::Tied(head, _) => {
            if keep_tied {
                vec![]
            } else {
                vec![(head.clone(), hf.shape.clone())]
            }
        }
    }
}

/// Inverse of `names::neox_to_grouped`.
fn grouped_to_neox(data: &[f32], row: usize, n_head: usize, groups: usize, hs: usize) -> Vec<f32> {
    let q_per_kv = n_head / groups;
    let (qn, kn) = (n_head * hs * row, groups * hs * row);
    let (q, k, v) = (&data[..qn], &data[qn..qn + kn], &data[qn + kn..]);
    let mut out = Vec::with_capacity(data.len());
    for g in 0..groups {
        let qs = q_per_kv * hs * row;
        out.extend_from_slice(&q[g * qs..(g + 1) * qs]);
        out.extend_from_slice(&k[g * hs * row..(g + 1) * hs * row]);
        out.extend_from_slice(&v[g * hs * row..(g + 1) * hs * row]);
    }
    out
}

/// The `config.json` for the merged model.
fn hf_config(cfg: &ModelConfig, base_dir: &Path, tied: bool) -> Result<serde_json::Value> {
    let base_json = base_dir.join("config.json");
    if cfg.family != Family::LitGpt && base_json.is_file() {
        let text = std::fs::read_to_string(&base_json).map_err(|e| Error::io(&base_json, e))?;
        let mut v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(&base_json, e))?;
        v["tie_word_embeddings"] = serde_json::json!(tied);
        v["torch_dtype"] = serde_json::json!("float32");
        return Ok(v);
    }
    let family = names::hf_family(cfg);
    let rope_scaling = match &cfg.rope_scaling {
        None => serde_json::Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            serde_json::json!({"rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_seq_len,
        }) => serde_json::json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_seq_len,
        }),
    };
    let common = serde_json::json!({
        "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_query_groups, "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.padded_vocab_size, "max_position_embeddings": cfg.block_size,
        "tie_word_embeddings": tied, "torch_dtype": "float32", "head_dim": cfg.head_size,
    });
    let mut v = common;
    let extra = match family {
        Family::HfGptNeox => serde_json::json!({
            "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
            "rotary_pct": cfg.rope_n_elem as f64 / cfg.head_size as f64, "rotary_emb_base": cfg.rope_base,
            "layer_norm_eps": cfg.norm_eps, "use_parallel_residual": cfg.parallel_residual,
            "hidden_act": if cfg.gelu_tanh { "gelu_new" } else { "gelu" }, "attention_bias": cfg.qkv_bias,
        }),
        Family::HfFalcon => {
            // Which Falcon decoder layout (and so which q/k/v grouping) the names follow.
            let layout = if cfg.shared_attention_norm && cfg.n_query_groups == 1 {
                serde_json::json!({"new_decoder_architecture": false, "multi_query": true})
            } else if cfg.shared_attention_norm && cfg.n_query_groups == cfg.n_head {
                serde_json::json!({"new_decoder_architecture": false, "multi_query": false})
            } else if cfg.parallel_residual {
                serde_json::json!({"new_decoder_architecture": true, "num_kv_heads": cfg.n_query_groups,
                    "num_ln_in_parallel_attn": if cfg.shared_attention_norm { 1 } else { 2 }})
            } else {
                return Err(Error::Unsupported(format!(
                    "exporting {} (sequential Falcon with grouped K/V) in Hugging Face layout",
                    cfg.name
                )));
            };
            let mut v = serde_json::json!({
                "model_type": "falcon", "architectures": ["FalconForCausalLM"], "ffn_hidden_size": cfg.intermediate_size,
                "layer_norm_epsilon": cfg.norm_eps, "rope_theta": cfg.rope_base, "parallel_attn": cfg.parallel_residual,
                "bias": cfg.mlp_bias, "alibi": false, "activation": "gelu",
            });
            if let (Some(o), Some(l)) = (v.as_object_mut(), layout.as_object()) {
                o.extend(l.clone());
            }
            if cfg.head_size * cfg.n_head != cfg.n_embd {
                return Err(Error::Unsupported(format!(
                    "exporting {} (Falcon with head size ≠ n_embd / n_head) in Hugging Face layout",
                    cfg.name
                )));
            }
            v
        }
        Family::HfPhi => serde_json::json!({
            "model_type": "phi", "architectures": ["PhiForCausalLM"],
            "partial_rotary_factor": cfg.rope_n_elem as f64 / cfg.head_size as f64, "rope_theta": cfg.rope_base,
            "layer_norm_eps": cfg.norm_eps, "hidden_act": if cfg.gelu_tanh { "gelu_new" } else { "gelu" },
        }),
        _ => {
            if cfg.norm != (NormKind::RmsNorm { unit_offset: false }) || cfg.mlp != MlpKind::Llama {
                return Err(Error::Unsupported(format!(
                    "exporting {} ({:?}, {:?}) in Hugging Face layout",
                    cfg.name, cfg.norm, cfg.mlp
                )));
            }
            let olmo2 = crate::config::Extras {
                post_attention_norm: true,
                post_mlp_norm: true,
                no_norm_1: true,
                no_norm_2: true,
                norm_qk_all_heads: true,
                ..Default::default()
            };
            let is_olmo2 = cfg.extras == olmo2 && cfg.norm_qk;
            if !is_olmo2 && cfg.extras != Default::default() {
                return Err(Error::Unsupported(format!(
                    "exporting {} ({}) in Hugging Face layout",
                    cfg.name,
                    cfg.features().join(", ")
                )));
            }
            let qwen = cfg.qkv_bias && !cfg.attn_out_bias;
            let (mt, arch) = if is_olmo2 {
                ("olmo2", "Olmo2ForCausalLM")
            } else if cfg.norm_qk {
                ("qwen3", "Qwen3ForCausalLM")
            } else if qwen {
                ("qwen2", "Qwen2ForCausalLM")
            } else if cfg.sliding_window.is_some() {
                ("mistral", "MistralForCausalLM")
            } else {
                ("llama", "LlamaForCausalLM")
            };
            serde_json::json!({
                "model_type": mt, "architectures": [arch], "rms_norm_eps": cfg.norm_eps,
                "rope_theta": cfg.rope_base, "rope_scaling": rope_scaling, "hidden_act": "silu",
                "attention_bias": cfg.qkv_bias && cfg.attn_out_bias, "mlp_bias": cfg.mlp_bias,
                "sliding_window": cfg.sliding_window, "use_sliding_window": cfg.sliding_window.is_some(),
            })
        }
    };
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    if family == Family::HfFalcon {
        // FalconConfig derives these and refuses them as keys.
        if let Some(o) = v.as_object_mut() {
            for k in ["head_dim", "num_key_value_heads", "intermediate_size"] {
                o.remove(k);
            }
        }
    }
    Ok(v)
}

/// Writes the merged model of `plan` into `out_dir` (created if needed).
pub fn export_merged(
    plan: &Plan,
    out_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ExportReport> {
    let cfg = &plan.checkpoint.config;
    if let Some((a, _)) = plan.adapters.iter().find(|(a, _)| !a.llama.is_empty()) {
        return Err(Error::Unsupported(format!(
            "{}: a LLaMA-Adapter's gated prefix cannot be folded into plain weights; run it with --adapter instead",
            a.path.display()
        )));
    }
    let files = plan.checkpoint.weights()?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    // Internal table (to read) and HF table (names to write), in the same order.
    let ours = names::table(cfg);
    let mut hf_cfg = cfg.clone();
    hf_cfg.family = names::hf_family(cfg);
    if hf_cfg.family == Family::HfPhi3 {
        return Err(Error::Unsupported(
            "exporting Phi-3 (fused gate_up_proj) in Hugging Face layout".into(),
        ));
    }
    let theirs = names::table(&hf_cfg);
    let head_adapted = plan
        .adapters
        .iter()
        .any(|(a, _)| a.updates.contains_key("lm_head"));
    let keep_tied = cfg.tie_embeddings && !head_adapted;
    // Check the base fully, and that its config can be written, before writing anything.
    names::load_check(cfg, &files)?;
    let cfg_json = hf_config(cfg, &plan.checkpoint.dir, keep_tied)?;
    progress("fingerprinting the base");
    let fp = fingerprint(cfg, &files)?;

    let mut header = BTreeMap::new();
    let mut order = Vec::new();
    let mut offset = 0usize;
    for h in &theirs {
        for (name, shape) in outputs(h, &hf_cfg, keep_tied) {
            let bytes = shape.iter().product::<usize>() * 4;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            order.push(name);
            offset += bytes;
        }
    }
    let provenance = serde_json::json!({
        "graftlm_version": env!("CARGO_PKG_VERSION"),
        "base": plan.checkpoint.dir.display().to_string(),
        "base_fingerprint": fp,
        "adapters": plan.adapters.iter().map(|(a, s)| serde_json::json!({
            "name": a.name, "path": a.path.display().to_string(), "format": a.format.as_str(),
            "step": a.step, "scale": s, "r": a.r, "alpha": a.alpha,
        })).collect::<Vec<_>>(),
    });
    header.insert(
        "__metadata__".to_string(),
        serde_json::json!({"format": "pt", "graftlm_merge": provenance.to_string()}),
    );
    let mut head = serde_json::to_vec(&header).map_err(|e| Error::parse(out_dir, e))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let final_path = out_dir.join("model.safetensors");
    let tmp_path = out_dir.join(".model.safetensors.partial");
    let write_err = |e: std::io::Error| Error::io(&tmp_path, e);
    let file = std::fs::File::create(&tmp_path).map_err(write_err)?;
    let mut w = BufWriter::new(file);
    w.write_all(&(head.len() as u64).to_le_bytes())
        .map_err(write_err)?;
    w.write_all(&head).map_err(write_err)?;

    let mut written = 0usize;
    for (ours_e, hf_e) in ours.iter().zip(&theirs) {
        let outs = outputs(hf_e, &hf_cfg, keep_tied);
        if outs.is_empty() {
            continue;
        }
        let mut t = names::read_entry(cfg, &files, ours_e)?;
        if let Some(lin) = ours_e.name.strip_suffix(".weight") {
            for (a, scale) in &plan.adapters {
                if let Some(u) = a.updates.get(lin) {
                    for (w, d) in t.data.iter_mut().zip(u.dense()) {
                        *w += scale * d;
                    }
                }
            }
        }
        let pieces: Vec<Vec<f32>> = match &hf_e.source {
            Source::QkvConcat(_) => {
                let row = t.shape[1..].iter().product::<usize>();
                let (qr, kvr) = (
                    cfg.n_head * cfg.head_size * row,
                    cfg.n_query_groups * cfg.head_size * row,
                );
                vec![
                    t.data[..qr].to_vec(),
                    t.data[qr..qr + kvr].to_vec(),
                    t.data[qr + kvr..].to_vec(),
                ]
            }
            Source::NeoxQkv(_) => {
                let row = t.shape[1..].iter().product::<usize>();
                vec![grouped_to_neox(
                    &t.data,
                    row,
                    cfg.n_head,
                    cfg.n_query_groups,
                    cfg.head_size,
                )]
            }
            _ => vec![std::mem::take(&mut t.data)],
        };
        for ((name, shape), data) in outs.iter().zip(pieces) {
            debug_assert_eq!(order.get(written), Some(name));
            debug_assert_eq!(shape.iter().product::<usize>(), data.len());
            let mut buf = Vec::with_capacity(data.len() * 4);
            for v in &data {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf).map_err(write_err)?;
            written += 1;
        }
        progress(&ours_e.name);
    }
    w.flush().map_err(write_err)?;
    w.into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    std::fs::rename(&tmp_path, &final_path).map_err(|e| Error::io(&final_path, e))?;

    let write_json = |name: &str, v: &serde_json::Value| -> Result<()> {
        let p = out_dir.join(name);
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::parse(&p, e))?;
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    write_json("config.json", &cfg_json)?;
    write_json("graftlm_merge.json", &provenance)?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        let src = plan.checkpoint.dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, out_dir.join(f)).map_err(|e| Error::io(&src, e))?;
        }
    }
    let style = plan.prompt_style_dir().join("prompt_style.yaml");
    if style.is_file() {
        std::fs::copy(&style, out_dir.join("prompt_style.yaml"))
            .map_err(|e| Error::io(&style, e))?;
    }
    let bytes = std::fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0);
    Ok(ExportReport {
        dir: out_dir.to_path_buf(),
        tensors: written,
        bytes,
        fingerprint: fp,
    })
}
