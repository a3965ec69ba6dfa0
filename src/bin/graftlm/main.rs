//! The `graftlm` command-line program. Its flags and `--json` output are a stable contract.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

mod batch;
mod chat;
mod generate;
mod input;
mod inspect;
use graftlm::adapters::StepChoice;
use graftlm::backend::ModelBackend;
use graftlm::model::WeightDtype;
use graftlm::{
    AdapterSpec, Error, GenerateOptions, Mode, ModelBuilder, Result, SamplingParams, Tokenizer,
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
    /// CPU threads for the kernels (default: RAYON_NUM_THREADS, else one per logical CPU).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
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
    /// Generate for many prompts at once, each with its own adapter or none (JSON Lines in and
    /// out): one read of the base weights per step for all of them.
    Batch(batch::BatchArgs),
}

/// Which base and adapters to load (shared by generate, chat and merge).
#[derive(Args)]
struct ModelArgs {
    /// Base checkpoint directory (LitGPT or Hugging Face layout); found from the adapter when absent.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Adapter file, step folder or run directory, optionally `PATH@SCALE` (repeatable).
    #[arg(long)]
    adapter: Vec<String>,
    /// Step of a run directory given with --adapter: a number or `latest`.
    #[arg(long)]
    step: Option<String>,
}

/// Sampling flags (defaults as `litgpt generate`).
#[derive(Args)]
struct SamplingArgs {
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

impl SamplingArgs {
    fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams::new(
            self.temperature,
            (self.top_k > 0).then_some(self.top_k),
            self.top_p,
            self.seed,
        );
        p.validate()?;
        Ok(p)
    }
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Start with the adapters merged.
    #[arg(long)]
    merge: bool,
    /// System prompt for prompt styles that have one.
    #[arg(long)]
    sys_prompt: Option<String>,
    /// Maximum new tokens per answer.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// How to hold the weight matrices: auto (as stored when bf16/f16, else f32), f32, bf16, f16,
    /// q8_0, q4_0. Arithmetic is f32 either way; bf16/f16 halve memory and roughly double
    /// decoding speed on a CPU, and round the weights of an f32 checkpoint; q8_0/q4_0 quantize
    /// the linear weights at load to GGML's blocks (adapters stay separate).
    #[arg(long, default_value = "auto")]
    weight_dtype: WeightDtype,
}

#[derive(Args)]
struct MergeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output directory: absent or empty (it must not be, hold, or lie inside the base or an
    /// adapter). It appears whole when the merge is done, or not at all.
    #[arg(long)]
    out: PathBuf,
    /// Replace a non-empty --out whole (its old contents are removed once the new ones are in
    /// place; they are never mixed).
    #[arg(long)]
    force: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Merge adapters into the weights instead of keeping them separate.
    #[arg(long)]
    merge: bool,
    /// The prompt; read from standard input when absent.
    #[arg(long)]
    prompt: Option<String>,
    #[command(flatten)]
    gen: GenArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// How to generate (shared by generate and batch).
#[derive(Args)]
struct GenArgs {
    /// System prompt for prompt styles that have one (batch: for requests that give none).
    #[arg(long)]
    sys_prompt: Option<String>,
    /// Maximum number of new tokens (batch: per request).
    #[arg(long, default_value_t = 50)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Use the prompt as is, without the checkpoint's prompt style.
    #[arg(long)]
    raw: bool,
    /// Backend: one of the compiled-in backends (default: the first).
    #[arg(long)]
    backend: Option<String>,
    /// How to hold the weight matrices: auto (as stored when bf16/f16, else f32), f32, bf16, f16,
    /// q8_0, q4_0. Arithmetic is f32 either way; bf16/f16 halve memory and roughly double
    /// decoding speed on a CPU, and round the weights of an f32 checkpoint; q8_0/q4_0 quantize
    /// the linear weights at load to GGML's blocks (adapters stay separate).
    #[arg(long, default_value = "auto")]
    weight_dtype: WeightDtype,
}

/// What generating needs before the model is built: the plan, the tokenizer and the prompt
/// style (`None` with `--raw`).
struct Setup {
    plan: graftlm::Plan,
    tokenizer: Tokenizer,
    style: Option<graftlm::PromptStyle>,
}

impl GenArgs {
    fn setup(&self, model: &ModelArgs, merge: bool) -> Result<Setup> {
        let mut plan = plan(model, merge)?;
        plan.weight_dtype = self.weight_dtype;
        let tokenizer = Tokenizer::from_dir(&plan.checkpoint.dir)?;
        let style = if self.raw {
            None
        } else {
            Some(plan.prompt_style()?)
        };
        Ok(Setup {
            plan,
            tokenizer,
            style,
        })
    }

    fn options(&self) -> Result<GenerateOptions> {
        let mut opts = GenerateOptions::new(self.max_new_tokens, self.sampling.params()?);
        opts.stop_strings = self.stop.clone();
        Ok(opts)
    }
}

impl Setup {
    /// `prompt` in the prompt style (as is with `--raw`).
    fn styled(&self, prompt: &str, sys_prompt: Option<&str>) -> String {
        match &self.style {
            Some(s) => s.apply(prompt, sys_prompt),
            None => prompt.to_string(),
        }
    }
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
    if let Some(Err(e)) = cli.threads.map(graftlm::backend::set_threads) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Generate(a) => on_backend(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Merge(a) => run_merge(a),
        Command::Chat(a) => run_chat(a),
        Command::Batch(a) => on_backend(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A command that runs on one backend, chosen by name at run time.
trait OnBackend {
    fn backend(&self) -> Option<&str>;
    fn run<B: ModelBackend>(self, device: &B::Device, backend: &str) -> Result<()>;
}

/// Runs `job` on its `--backend` (default: the first compiled in).
fn on_backend(job: impl OnBackend) -> Result<()> {
    let backend = job.backend().map(str::to_string).unwrap_or_else(|| {
        graftlm::backend::available()
            .first()
            .copied()
            .unwrap_or("none")
            .to_string()
    });
    match backend.as_str() {
        #[cfg(feature = "flex")]
        "flex" => job.run::<graftlm::backend::Flex>(&Default::default(), "flex"),
        #[cfg(feature = "ndarray")]
        "ndarray" => job.run::<graftlm::backend::NdArray>(&Default::default(), "ndarray"),
        #[cfg(feature = "cuda")]
        "cuda" => job.run::<graftlm::backend::Cuda>(&Default::default(), "cuda"),
        other => Err(Error::invalid(
            "backend",
            format!(
                "`{other}` is not compiled in (available: {})",
                graftlm::backend::available().join(", ")
            ),
        )),
    }
}

fn run_chat(a: ChatArgs) -> Result<()> {
    let mut plan = plan(&a.model, a.merge)?;
    plan.weight_dtype = a.weight_dtype;
    let sampling = a.sampling.params()?;
    let tok = Tokenizer::from_dir(&plan.checkpoint.dir)?;
    let style = plan.prompt_style()?;
    // `/step` works on the run directory of the first adapter (its parent when a step was given).
    let run_dir = a.model.adapter.first().map(|s| {
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
    let plan = plan(&a.model, false)?;
    let t0 = Instant::now();
    let opts = graftlm::export::ExportOptions::default().force(a.force);
    let report = graftlm::export::export_merged_with(&plan, &a.out, &opts, &mut |_| {})?;
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

fn plan(m: &ModelArgs, merge: bool) -> Result<graftlm::Plan> {
    let (checkpoint, adapters, step) = (m.checkpoint.as_ref(), &m.adapter, m.step.as_deref());
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
