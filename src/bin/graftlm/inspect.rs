//! `graftlm inspect`: checkpoints, adapters, training runs and merge outputs.

use std::path::Path;

use graftlm::{Checkpoint, PromptStyle, Result};

use crate::InspectArgs;

/// What `inspect` says about adapters in (or at) `dir`, as JSON, or `None` if there are none.
fn adapters_in(dir: &Path) -> Option<serde_json::Value> {
    use graftlm::adapters;
    let one = |loc: &adapters::AdapterLocation| -> serde_json::Value {
        let recorded = adapters::recorded_base(loc).ok().flatten();
        let base = adapters::resolve_base(loc).ok();
        let detail = base.as_ref().and_then(|b| {
            let ck = Checkpoint::open(b).ok()?;
            adapters::read(loc, &ck.config, None).ok()
        });
        serde_json::json!({
            "dir": loc.dir.display().to_string(),
            "weights": loc.weights.display().to_string(),
            "format": loc.format.as_str(),
            "step": loc.step,
            "recorded_base": recorded,
            "base": base.map(|b| b.display().to_string()),
            "r": detail.as_ref().map(|d| d.r),
            "alpha": detail.as_ref().map(|d| d.alpha),
            "targets": detail.as_ref().map(|d| d.updates.keys().cloned().collect::<Vec<_>>()),
            "parameters": detail.as_ref().map(|d| d.parameter_count()),
        })
    };
    let steps = adapters::list_steps(dir).unwrap_or_default();
    if !steps.is_empty() {
        let v: Vec<serde_json::Value> = steps
            .iter()
            .filter_map(|s| adapters::locate(&s.dir, None).ok())
            .map(|l| one(&l))
            .collect();
        return Some(serde_json::Value::Array(v));
    }
    adapters::locate(dir, None)
        .ok()
        .map(|l| serde_json::Value::Array(vec![one(&l)]))
}

fn print_adapters(v: &serde_json::Value) {
    for a in v.as_array().into_iter().flatten() {
        let step = a["step"]
            .as_u64()
            .map(|s| format!("step {s}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "  adapter       {} [{}] {} r={} alpha={} targets={} params={}",
            a["dir"].as_str().unwrap_or("?"),
            a["format"].as_str().unwrap_or("?"),
            step,
            a["r"],
            a["alpha"],
            a["targets"].as_array().map(|t| t.len()).unwrap_or(0),
            a["parameters"]
        );
        println!(
            "                base {} (recorded: {})",
            a["base"]
                .as_str()
                .unwrap_or("NOT FOUND — pass --checkpoint"),
            a["recorded_base"].as_str().unwrap_or("none")
        );
    }
}

/// The provenance of a `graftlm merge` output, with the recorded base fingerprint checked when the
/// base is still there.
fn merged_from(dir: &Path) -> Option<serde_json::Value> {
    let path = dir.join("graftlm_merge.json");
    // Optional: only a regular file is read (a FIFO there would block forever).
    if !path.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let mut v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let check = v["base"].as_str().and_then(|b| {
        let ck = Checkpoint::open(b).ok()?;
        let fp = graftlm::export::fingerprint(&ck.config, &ck.weights().ok()?).ok()?;
        Some(Some(fp.as_str()) == v["base_fingerprint"].as_str())
    });
    v["base_fingerprint_matches"] = serde_json::json!(check);
    Some(v)
}

pub fn run(a: InspectArgs) -> Result<()> {
    let is_ckpt = a.dir.join("model_config.yaml").is_file() || a.dir.join("config.json").is_file();
    let adapters = adapters_in(&a.dir);
    if !is_ckpt {
        let Some(v) = adapters else {
            // Not a checkpoint and no adapters: report why as a checkpoint would.
            Checkpoint::open(&a.dir)?;
            return Ok(());
        };
        if a.json {
            println!(
                "{}",
                serde_json::json!({"dir": a.dir.display().to_string(), "adapters": v})
            );
        } else {
            println!("{}  (adapters)", a.dir.display());
            print_adapters(&v);
        }
        return Ok(());
    }
    let ckpt = Checkpoint::open(&a.dir)?;
    let info = ckpt.inspect()?;
    let c = &info.config;
    let style = PromptStyle::resolve(&ckpt.dir, &c.name)?;
    if a.json {
        let v = serde_json::json!({
            "dir": info.dir.display().to_string(),
            "format": info.format,
            "name": c.name,
            "architecture": c.family_name(),
            "layout": format!("{:?}", c.family),
            "features": c.features(),
            "weights": info.weights_path.display().to_string(),
            "tensors": info.tensor_count,
            "parameters": info.parameter_count,
            "dtypes": info.dtypes.iter().map(|(d, n)| serde_json::json!({"dtype": d, "count": n})).collect::<Vec<_>>(),
            "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head,
            "n_query_groups": c.n_query_groups, "head_size": c.head_size,
            "block_size": c.block_size, "vocab_size": c.padded_vocab_size,
            "intermediate_size": c.intermediate_size,
            "norm": format!("{:?}", c.norm), "mlp": format!("{:?}", c.mlp),
            "rope_n_elem": c.rope_n_elem, "rope_base": c.rope_base,
            "parallel_residual": c.parallel_residual,
            "prompt_style": style.name(),
            "files": info.files,
            "merged_from": merged_from(&info.dir),
            "adapters": adapters.clone().unwrap_or(serde_json::Value::Array(vec![])),
        });
        println!("{v}");
    } else {
        println!("{}  ({} checkpoint)", info.dir.display(), info.format);
        println!("  name          {}", c.name);
        println!(
            "  weights       {} ({} tensors)",
            info.weights_path.display(),
            info.tensor_count
        );
        let dt: Vec<String> = info
            .dtypes
            .iter()
            .map(|(d, n)| format!("{d} ×{n}"))
            .collect();
        println!("  dtypes        {}", dt.join(", "));
        println!("  parameters    {}", info.parameter_count);
        println!(
            "  shape         {} layers, n_embd {}, {} heads × {} (kv heads {}), mlp {:?} {}, vocab {}, block {}",
            c.n_layer, c.n_embd, c.n_head, c.head_size, c.n_query_groups, c.mlp, c.intermediate_size,
            c.padded_vocab_size, c.block_size
        );
        println!(
            "  features      norm {:?}, rotary {}/{} dims base {}, parallel residual {}, shared attn norm {}",
            c.norm, c.rope_n_elem, c.head_size, c.rope_base, c.parallel_residual, c.shared_attention_norm
        );
        println!("  family        {}", c.family_name());
        println!("  non-default   {}", c.features().join(", "));
        println!("  prompt style  {}", style.name());
        println!("  side files    {}", info.files.join(", "));
        if let Some(m) = merged_from(&info.dir) {
            println!("  merged from   {}", m);
        }
        if let Some(v) = &adapters {
            print_adapters(v);
        }
    }
    Ok(())
}
