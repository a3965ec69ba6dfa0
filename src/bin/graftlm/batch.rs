//! `graftlm batch`: many prompts, each with its own adapter or none, decoded together — every
//! step reads the base weights once for all of them ([`graftlm::generate_batch`]).
//!
//! Requests are JSON Lines (`--requests FILE`, or standard input): one object per line,
//! `{"prompt": "...", "adapter": "NAME", "sys_prompt": "..."}` with `adapter` and `sys_prompt`
//! optional (`adapter` absent or null: the base alone). `NAME` is an adapter's name (as
//! `generate --json` lists it: its folder, `RUN/step-…` for a step folder) or the path exactly
//! as given to `--adapter`. Results go to standard output as JSON Lines, one per request in
//! input order; a summary goes to standard error.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use graftlm::{AdapterSpec, BatchRequest, Error, Result};

use super::{GenArgs, ModelArgs};
use graftlm::backend::ModelBackend;

#[derive(Args)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON Lines file of requests; standard input when absent or `-`.
    #[arg(long)]
    requests: Option<PathBuf>,
    #[command(flatten)]
    gen: GenArgs,
}

/// One parsed request line.
struct Request {
    prompt: String,
    adapter: Option<String>,
    sys_prompt: Option<String>,
}

/// Parses the JSON Lines requests (blank lines skipped); errors name the line.
fn parse_requests(text: &str) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Error::invalid("requests", format!("line {}: {why}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["prompt", "adapter", "sys_prompt"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown key `{k}` (expected prompt, adapter, sys_prompt)"
            )));
        }
        let text = |key: &str, required: bool| -> Result<Option<String>> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                None | Some(serde_json::Value::Null) if !required => Ok(None),
                None | Some(serde_json::Value::Null) => Err(bad(format!("`{key}` is missing"))),
                Some(_) => Err(bad(format!("`{key}` is not a string"))),
            }
        };
        out.push(Request {
            prompt: text("prompt", true)?.unwrap_or_default(),
            adapter: text("adapter", false)?,
            sys_prompt: text("sys_prompt", false)?,
        });
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "requests",
            "no request (one JSON object per line)",
        ));
    }
    Ok(out)
}

impl super::OnBackend for BatchArgs {
    fn backend(&self) -> Option<&str> {
        self.gen.backend.as_deref()
    }
    fn run<B: ModelBackend>(self, device: &B::Device, backend: &str) -> Result<()> {
        run_on::<B>(self, device, backend)
    }
}

fn run_on<B: ModelBackend>(a: BatchArgs, device: &B::Device, backend: &str) -> Result<()> {
    let mut t0 = Instant::now();
    let setup = a.gen.setup(&a.model, false)?;
    // Every request needs its own cache: a batch of more than eight prompts' worth of text (and
    // never more than 256 MiB) is refused rather than read into memory.
    let limit = super::input::input_limit(setup.plan.checkpoint.config.block_size)
        .saturating_mul(8)
        .min(256 << 20);
    let waiting = Instant::now();
    let text = match a.requests.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            super::input::read_limited(f, limit, &p.display().to_string())?
        }
        _ => super::input::read_stdin(limit)?,
    };
    t0 += waiting.elapsed();
    let requests = parse_requests(&text)?;
    let styled: Vec<String> = requests
        .iter()
        .map(|r| {
            setup.styled(
                &r.prompt,
                r.sys_prompt.as_deref().or(a.gen.sys_prompt.as_deref()),
            )
        })
        .collect();
    let (plan, tokenizer) = (setup.plan, setup.tokenizer);
    let ids = styled
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ids = tokenizer.encode(s)?;
            if ids.is_empty() {
                return Err(Error::invalid(
                    "requests",
                    format!("request {}: the prompt has no tokens", i + 1),
                ));
            }
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let model = plan.build::<B>(device)?;
    // Adapter names, and the `--adapter` arguments (without `@SCALE`) that stand for them.
    let names: Vec<String> = model.grafts().iter().map(|g| g.name.clone()).collect();
    let given: Vec<PathBuf> = a
        .model
        .adapter
        .iter()
        .map(|s| s.parse::<AdapterSpec>().map(|x| x.path))
        .collect::<Result<_>>()?;
    let resolve = |r: &Request| -> Option<String> {
        let want = r.adapter.as_deref()?;
        if names.iter().any(|n| n == want) || given.len() != names.len() {
            return Some(want.to_string());
        }
        let i = given.iter().position(|p| p.as_os_str() == want);
        Some(i.map_or_else(|| want.to_string(), |i| names[i].clone()))
    };
    let chosen: Vec<Option<String>> = requests.iter().map(resolve).collect();
    let batch: Vec<BatchRequest<'_>> = ids
        .iter()
        .zip(&chosen)
        .map(|(ids, c)| BatchRequest::new(ids, c.as_deref()))
        .collect();
    let opts = a.gen.options()?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let outs = graftlm::generate_batch(&model, &tokenizer, &batch, &opts, &mut |_, _| true)?;
    let gen_s = t1.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    for (i, ((out, c), prompt)) in outs.iter().zip(&chosen).zip(&styled).enumerate() {
        let v = serde_json::json!({
            "index": i,
            "adapter": c,
            "prompt": prompt,
            "prompt_ids": out.prompt_ids,
            "generated_ids": out.generated_ids,
            "text": out.text,
            "stop_reason": out.stop_reason.as_str(),
        });
        writeln!(lock, "{v}").map_err(|e| Error::io("<stdout>", e))?;
    }
    let n: usize = outs.iter().map(|o| o.generated_ids.len()).sum();
    eprintln!(
        "[{} requests, {n} tokens in {gen_s:.2} s ({:.1} tokens/s) on {backend}; load {load_s:.2} s]",
        outs.len(),
        n as f64 / gen_s.max(1e-9),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_errors_name_the_line() {
        let r = parse_requests(
            "{\"prompt\": \"a\"}\n\n{\"prompt\": \"b\", \"adapter\": \"x\", \"sys_prompt\": null}\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].adapter.as_deref(), r[1].adapter.as_deref()),
            (None, Some("x"))
        );
        for (text, want) in [
            ("{\"prompt\": \"a\"}\nnope", "line 2: not JSON"),
            ("[1]", "line 1: not a JSON object"),
            ("{\"adapter\": \"x\"}", "line 1: `prompt` is missing"),
            ("{\"prompt\": 3}", "line 1: `prompt` is not a string"),
            (
                "{\"prompt\": \"a\", \"adaptor\": \"x\"}",
                "unknown key `adaptor`",
            ),
            ("\n  \n", "no request"),
        ] {
            let e = parse_requests(text).err().unwrap().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
