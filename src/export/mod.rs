//! Exporting a merged model (base + adapters folded in) as a Hugging Face checkpoint:
//! `model.safetensors` + `config.json` + tokenizer files + `graftlm_merge.json` (which base, its
//! fingerprint, which adapters at which scales). Works on the host one tensor at a time, so peak
//! memory stays near the largest tensor. The output directory is checked against every input
//! before anything is written and appears whole or not at all ([`out_dir`]).

mod hf_config;
pub mod out_dir;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::builder::Plan;
use crate::checkpoint::names::{self, Source};
use crate::checkpoint::WeightFiles;
use crate::config::{Family, ModelConfig};
use crate::error::{Error, Result};
use hf_config::{grouped_to_neox, hf_config, outputs};
use out_dir::{inputs_of, Target};

/// How an export treats an output directory that already holds something.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExportOptions {
    /// Replace a non-empty output directory whole (it is never merged into). Without it, a
    /// non-empty output directory is refused before anything is written.
    pub force: bool,
}

impl ExportOptions {
    /// [`ExportOptions::force`] set to `force`.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

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
    let table = names::table(cfg)?;
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

/// Writes the merged model of `plan` into `out_dir`, which must be absent or empty (see
/// [`export_merged_with`] to replace one).
pub fn export_merged(
    plan: &Plan,
    out_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ExportReport> {
    export_merged_with(plan, out_dir, &ExportOptions::default(), progress)
}

/// Writes the merged model of `plan` into `out_dir`. Refused before anything is written: an
/// `out_dir` that is, lies inside or holds the base or an adapter; one that is a symbolic link
/// or a file; a non-empty one unless `opts.force`. The files are written into a fresh directory
/// beside `out_dir` and renamed into place at the end, so `out_dir` holds its old contents or the
/// whole export, and a failure leaves nothing behind.
pub fn export_merged_with(
    plan: &Plan,
    out_dir: &Path,
    opts: &ExportOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ExportReport> {
    let cfg = &plan.checkpoint.config;
    if let Some((a, _)) = plan.adapters.iter().find(|(a, _)| !a.llama.is_empty()) {
        return Err(Error::Unsupported(format!(
            "{}: a LLaMA-Adapter's gated prefix cannot be folded into plain weights; run it with --adapter instead",
            a.path.display()
        )));
    }
    let mut inputs = vec![(plan.checkpoint.dir.as_path(), "base checkpoint")];
    for (a, _) in &plan.adapters {
        inputs.push((a.dir.as_path(), "adapter folder"));
        inputs.push((a.path.as_path(), "adapter weights"));
    }
    let target = Target::check(out_dir, &inputs_of(inputs), opts.force)?;
    let files = plan.checkpoint.weights()?;
    // Internal table (to read) and HF table (names to write), in the same order.
    let ours = names::table(cfg)?;
    let layout = names::layouts::export(cfg);
    if cfg.family != Family::LitGpt && names::layouts::of(cfg).family != layout.family {
        // The base's own config.json (copied) would name the fused tensors this writes apart.
        return Err(Error::Unsupported(format!(
            "exporting {} ({}, fused q/k/v and gate/up tensors) in its Hugging Face layout",
            cfg.name, cfg.arch
        )));
    }
    let theirs = names::table_in(cfg, layout)?;
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
        for (name, shape) in outputs(h, cfg, keep_tied) {
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
    // From here on everything goes into the staging directory, removed on any failure.
    let staging = target.stage()?;
    let (file, weights_path) = staging.create("model.safetensors")?;
    let write_err = |e: std::io::Error| Error::io(&weights_path, e);
    let mut w = BufWriter::new(file);
    w.write_all(&(head.len() as u64).to_le_bytes())
        .map_err(write_err)?;
    w.write_all(&head).map_err(write_err)?;

    let mut written = 0usize;
    for (ours_e, hf_e) in ours.iter().zip(&theirs) {
        let outs = outputs(hf_e, cfg, keep_tied);
        if outs.is_empty() {
            continue;
        }
        let mut t = names::read_entry(cfg, &files, ours_e)?;
        if let Some(lin) = ours_e.name.strip_suffix(".weight") {
            use crate::adapters::bounds::{check_term, term_bound};
            let updates: Vec<_> = (plan.adapters.iter())
                .filter_map(|(a, s)| a.updates.get(lin).map(|u| (a, u, *s)))
                .collect();
            // Every term checked against the base before any is added; the base's largest
            // weight is only computed when a term is large enough to need it.
            let base_max = std::cell::OnceCell::new();
            let largest =
                || *base_max.get_or_init(|| t.data.iter().fold(0f32, |m, x| m.max(x.abs())));
            for (a, u, scale) in &updates {
                check_term(Some(a), lin, largest, term_bound(u), *scale)?;
            }
            for (_, u, scale) in &updates {
                for (w, d) in t.data.iter_mut().zip(u.dense()) {
                    *w += scale * d;
                }
            }
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "scale",
                format!(
                    "merging gives a non-finite value in `{}` (element {i}); nothing was written",
                    ours_e.name
                ),
            ));
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
    let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);

    for (name, v) in [
        ("config.json", &cfg_json),
        ("graftlm_merge.json", &provenance),
    ] {
        let text = serde_json::to_vec_pretty(v).map_err(|e| Error::parse(out_dir, e))?;
        staging.write(name, &text)?;
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        let src = plan.checkpoint.dir.join(f);
        if src.is_file() {
            staging.copy_in(&src, f)?;
        }
    }
    let style = plan.prompt_style_dir().join("prompt_style.yaml");
    if style.is_file() {
        staging.copy_in(&style, "prompt_style.yaml")?;
    }
    progress("moving the export into place");
    let dir = staging.commit()?;
    Ok(ExportReport {
        dir,
        tensors: written,
        bytes,
        fingerprint: fp,
    })
}
