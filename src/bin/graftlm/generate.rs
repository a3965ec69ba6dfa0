//! `graftlm generate`: one prompt (or standard input) through the model, text streamed to
//! stdout, or one JSON object with `--json`.

use std::io::Write;
use std::time::Instant;

use graftlm::backend::ModelBackend;
use graftlm::{Error, Result};

use super::{input, GenerateArgs, OnBackend, Setup};

impl OnBackend for GenerateArgs {
    fn backend(&self) -> Option<&str> {
        self.gen.backend.as_deref()
    }
    fn run<B: ModelBackend>(self, device: &B::Device, backend: &str) -> Result<()> {
        generate_on::<B>(self, device, backend)
    }
}

fn generate_on<B: ModelBackend>(a: GenerateArgs, device: &B::Device, backend: &str) -> Result<()> {
    let mut t0 = Instant::now();
    let setup = a.gen.setup(&a.model, a.merge)?;
    let prompt = match a.prompt {
        Some(p) => p,
        None => {
            // The time spent waiting for standard input is not the model's.
            let waiting = Instant::now();
            let p = input::read_stdin(input::input_limit(setup.plan.checkpoint.config.block_size))?;
            t0 += waiting.elapsed();
            p
        }
    };
    let styled = setup.styled(&prompt, a.gen.sys_prompt.as_deref());
    let Setup {
        plan,
        tokenizer,
        style,
    } = setup;
    let ckpt = plan.checkpoint.clone();
    let ids = tokenizer.encode(&styled)?;
    if ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let opts = a.gen.options()?;
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
            "weight_dtype": model.weight_dtype().as_str(),
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

fn adapters_json<B: ModelBackend>(model: &graftlm::Model<B>) -> serde_json::Value {
    model
        .grafts()
        .iter()
        .map(|g| {
            serde_json::json!({
                "name": g.name, "path": g.source, "format": g.format.as_str(), "step": g.step,
                "scale": g.scale, "active": g.active, "merged": g.merged,
            })
        })
        .collect()
}
