//! The `graftlm` command-line program. Its flags and `--json` output are a stable contract.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::Backend;
use clap::{Args, Parser, Subcommand};

mod chat;
use graftlm::adapters::StepChoice;
use graftlm::{
    AdapterSpec, Checkpoint, Error, GenerateOptions, Mode, ModelBuilder, PromptStyle, Result,
    SamplingParams, Tokenizer,
};

#[derive(Parser)]
#[command(
    name = "graftlm",
    version,
    about = "Run GPT-style models and graft fine-tuning adapters onto them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a checkpoint.
    Generate(GenerateArgs),
    /// Describe a checkpoint, adapter or training-run directory.
    Inspect(InspectArgs),
    /// Chat interactively; switch, rescale, merge and unmerge adapters without reloading the base.
    Chat(ChatArgs),
    /// Fold adapters into the base and write a Hugging Face checkpoint (safetensors + config.json).
    Merge(MergeArgs),
}

#[derive(Args)]
struct ChatArgs {
    /// Base checkpoint directory; found from the adapter when absent.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Adapter file, step folder or run directory, optionally `PATH@SCALE` (repeatable).
    #[arg(long)]
    adapter: Vec<String>,
    /// Step of a run directory: a number or `latest`.
    #[arg(long)]
    step: Option<String>,
    /// Start with the adapters merged.
    #[arg(long)]
    merge: bool,
    /// System prompt for prompt styles that have one.
    #[arg(long)]
    sys_prompt: Option<String>,
    /// Maximum new tokens per answer.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0: no limit).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling threshold in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
}

#[derive(Args)]
struct MergeArgs {
    /// Base checkpoint directory; found from the adapter when absent.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Adapter file, step folder or run directory, optionally `PATH@SCALE` (repeatable).
    #[arg(long, required = true)]
    adapter: Vec<String>,
    /// Step of a run directory: a number or `latest`.
    #[arg(long)]
    step: Option<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Base checkpoint directory (LitGPT or Hugging Face layout); found from the adapter when absent.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Adapter file, step folder or run directory, optionally `PATH@SCALE` (repeatable).
    #[arg(long)]
    adapter: Vec<String>,
    /// Step of a run directory given with --adapter: a number or `latest`.
    #[arg(long)]
    step: Option<String>,
    /// Merge adapters into the weights instead of keeping them separate.
    #[arg(long)]
    merge: bool,
    /// The prompt; read from standard input when absent.
    #[arg(long)]
    prompt: Option<String>,
    /// System prompt for prompt styles that have one.
    #[arg(long)]
    sys_prompt: Option<String>,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 50)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0: no limit).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Nucleus sampling threshold in [0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Use the prompt as is, without the checkpoint's prompt style.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Backend: one of the compiled-in backends (default: the first).
    #[arg(long)]
    backend: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// Checkpoint directory.
    dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => run_generate(a),
        Command::Inspect(a) => run_inspect(a),
        Command::Merge(a) => run_merge(a),
        Command::Chat(a) => run_chat(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let backend = a.backend.clone().unwrap_or_else(|| {
        graftlm::backend::available()
            .first()
            .copied()
            .unwrap_or("none")
            .to_string()
    });
    match backend.as_str() {
        #[cfg(feature = "flex")]
        "flex" => generate_on::<graftlm::backend::Flex>(a, &Default::default(), "flex"),
        #[cfg(feature = "ndarray")]
        "ndarray" => generate_on::<graftlm::backend::NdArray>(a, &Default::default(), "ndarray"),
        #[cfg(feature = "cuda")]
        "cuda" => generate_on::<graftlm::backend::Cuda>(a, &Default::default(), "cuda"),
        other => Err(Error::invalid(
            "backend",
            format!(
                "`{other}` is not compiled in (available: {})",
                graftlm::backend::available().join(", ")
            ),
        )),
    }
}

fn generate_on<B: Backend>(a: GenerateArgs, device: &B::Device, backend: &str) -> Result<()> {
    let prompt = match a.prompt {
        Some(p) => p,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("<stdin>", e))?;
            s
        }
    };
    let t0 = Instant::now();
    let plan = plan(
        a.checkpoint.as_ref(),
        &a.adapter,
        a.step.as_deref(),
        a.merge,
    )?;
    let ckpt = plan.checkpoint.clone();
    let tokenizer = Tokenizer::from_dir(&ckpt.dir)?;
    // A LitGPT fine-tune records the prompt style it trained with; it wins over the base's.
    let style_dir = plan
        .adapters
        .iter()
        .map(|(ad, _)| ad.dir.clone())
        .find(|d| d.join("prompt_style.yaml").is_file())
        .unwrap_or_else(|| ckpt.dir.clone());
    let style = if a.raw {
        None
    } else {
        Some(PromptStyle::resolve(&style_dir, &ckpt.config.name)?)
    };
    let styled = match &style {
        Some(s) => s.apply(&prompt, a.sys_prompt.as_deref()),
        None => prompt.clone(),
    };
    let ids = tokenizer.encode(&styled)?;
    if ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: (a.top_k > 0).then_some(a.top_k),
            top_p: a.top_p,
            seed: a.seed,
        },
        stop_strings: a.stop.clone(),
        ..Default::default()
    };
    opts.sampling.validate()?;
    let total = ids.len() + opts.max_new_tokens;
    if total > ckpt.config.block_size {
        return Err(Error::ContextOverflow {
            prompt_tokens: ids.len(),
            max_new_tokens: opts.max_new_tokens,
            total,
            block_size: ckpt.config.block_size,
        });
    }
    let model = plan.build::<B>(device)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let stdout = std::io::stdout();
    let json = a.json;
    let out = graftlm::generate(&model, &tokenizer, &ids, &opts, &mut |piece| {
        if !json {
            let mut lock = stdout.lock();
            let _ = lock.write_all(piece.as_bytes());
            let _ = lock.flush();
        }
        true
    })?;
    let gen_s = t1.elapsed().as_secs_f64();
    let n = out.generated_ids.len();
    if json {
        let v = serde_json::json!({
            "checkpoint": ckpt.dir.display().to_string(),
            "backend": backend,
            "prompt_style": style.as_ref().map(|s| s.name()),
            "prompt": styled,
            "prompt_ids": out.prompt_ids,
            "generated_ids": out.generated_ids,
            "text": out.text,
            "stop_reason": out.stop_reason.as_str(),
            "base": ckpt.dir.display().to_string(),
            "base_from": plan.base_from,
            "adapters": adapters_json(&model),
            "merged": a.merge,
            "seconds": {"load": load_s, "generate": gen_s},
        });
        println!("{v}");
    } else {
        println!();
        eprintln!(
            "[{n} tokens in {gen_s:.2} s ({:.1} tokens/s) on {backend}; load {load_s:.2} s; stop: {}]",
            n as f64 / gen_s.max(1e-9),
            out.stop_reason.as_str()
        );
    }
    Ok(())
}

fn run_chat(a: ChatArgs) -> Result<()> {
    let plan = plan(
        a.checkpoint.as_ref(),
        &a.adapter,
        a.step.as_deref(),
        a.merge,
    )?;
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: (a.top_k > 0).then_some(a.top_k),
        top_p: a.top_p,
        seed: a.seed,
    };
    sampling.validate()?;
    let tok = Tokenizer::from_dir(&plan.checkpoint.dir)?;
    let style_dir = plan
        .adapters
        .iter()
        .map(|(ad, _)| ad.dir.clone())
        .find(|d| d.join("prompt_style.yaml").is_file())
        .unwrap_or_else(|| plan.checkpoint.dir.clone());
    let style = PromptStyle::resolve(&style_dir, &plan.checkpoint.config.name)?;
    // `/step` works on the run directory of the first adapter (its parent when a step was given).
    let run_dir = a.adapter.first().map(|s| {
        let p = s
            .parse::<AdapterSpec>()
            .map(|x| x.path)
            .unwrap_or_else(|_| PathBuf::from(s));
        if graftlm::adapters::list_steps(&p)
            .map(|v| v.is_empty())
            .unwrap_or(true)
        {
            p.parent().map(|q| q.to_path_buf()).unwrap_or(p)
        } else {
            p
        }
    });
    let settings = chat::ChatSettings {
        sampling,
        max_new_tokens: a.max_new_tokens,
        sys_prompt: a.sys_prompt.clone(),
        run_dir,
    };
    #[cfg(feature = "flex")]
    type Cpu = graftlm::backend::Flex;
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    type Cpu = graftlm::backend::NdArray;
    let model = plan.build::<Cpu>(&Default::default())?;
    chat::run(model, &tok, &style, &settings)
}

fn run_merge(a: MergeArgs) -> Result<()> {
    let plan = plan(a.checkpoint.as_ref(), &a.adapter, a.step.as_deref(), false)?;
    let t0 = Instant::now();
    let report = graftlm::export::export_merged(&plan, &a.out, &mut |_| {})?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "out": report.dir.display().to_string(),
            "base": plan.checkpoint.dir.display().to_string(),
            "base_from": plan.base_from,
            "base_fingerprint": report.fingerprint,
            "adapters": plan.adapters.iter().map(|(ad, s)| serde_json::json!({
                "name": ad.name, "path": ad.path.display().to_string(), "format": ad.format.as_str(),
                "step": ad.step, "scale": s,
            })).collect::<Vec<_>>(),
            "tensors": report.tensors,
            "bytes": report.bytes,
            "seconds": secs,
        });
        println!("{v}");
    } else {
        eprintln!(
            "merged {} adapter(s) into {} -> {} ({} tensors, {} bytes, {secs:.2} s)",
            plan.adapters.len(),
            plan.checkpoint.dir.display(),
            report.dir.display(),
            report.tensors,
            report.bytes
        );
    }
    Ok(())
}

fn plan(
    checkpoint: Option<&PathBuf>,
    adapters: &[String],
    step: Option<&str>,
    merge: bool,
) -> Result<graftlm::Plan> {
    if merge && adapters.is_empty() {
        return Err(Error::invalid(
            "merge",
            "--merge needs at least one --adapter",
        ));
    }
    if step.is_some() && adapters.is_empty() {
        return Err(Error::invalid(
            "step",
            "--step needs an --adapter run directory",
        ));
    }
    let step = step.map(str::parse::<StepChoice>).transpose()?;
    let mut b = ModelBuilder::new().mode(if merge { Mode::Merged } else { Mode::Separate });
    if let Some(c) = checkpoint {
        b = b.base(c);
    } else if adapters.is_empty() {
        return Err(Error::invalid(
            "checkpoint",
            "give --checkpoint DIR or an --adapter that records its base",
        ));
    }
    for s in adapters {
        let mut spec: AdapterSpec = s.parse()?;
        spec.step = step;
        b = b.adapter(spec);
    }
    b.plan()
}

fn adapters_json<B: Backend>(model: &graftlm::Model<B>) -> serde_json::Value {
    model
        .grafts()
        .iter()
        .map(|g| {
            serde_json::json!({
                "name": g.name, "path": g.source, "format": g.format, "step": g.step,
                "scale": g.scale, "active": g.active, "merged": g.merged,
            })
        })
        .collect()
}

/// What `inspect` says about adapters in (or at) `dir`, as JSON, or `None` if there are none.
fn adapters_in(dir: &std::path::Path) -> Option<serde_json::Value> {
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
fn merged_from(dir: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("graftlm_merge.json")).ok()?;
    let mut v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let check = v["base"].as_str().and_then(|b| {
        let ck = Checkpoint::open(b).ok()?;
        let fp = graftlm::export::fingerprint(&ck.config, &ck.weights().ok()?).ok()?;
        Some(Some(fp.as_str()) == v["base_fingerprint"].as_str())
    });
    v["base_fingerprint_matches"] = serde_json::json!(check);
    Some(v)
}

fn run_inspect(a: InspectArgs) -> Result<()> {
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
            "architecture": format!("{:?}", c.family),
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
