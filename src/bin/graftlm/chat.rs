//! `graftlm chat`: an interactive, streaming conversation in the checkpoint's prompt style, with
//! commands to switch, attach, rescale, merge and unmerge adapters live — the base stays loaded.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use graftlm::adapters::{self, StepChoice};
use graftlm::{
    AdapterSpec, Error, GenerateOptions, Mode, Model, PromptStyle, Result, SamplingParams,
    Tokenizer,
};

use super::input::{read_line, Line};
use graftlm::backend::ModelBackend;

/// Settings for a chat session.
pub struct ChatSettings {
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub sys_prompt: Option<String>,
    /// The run directory of the first adapter, for `/step`.
    pub run_dir: Option<PathBuf>,
}

const HELP: &str = "commands:
  /adapters                 list attached adapters
  /use NAME | /use none     make NAME the only active adapter (or none)
  /attach PATH[@SCALE]      read and attach an adapter (file, step folder or run dir)
  /step N|latest            attach that step of the first adapter's run directory and use it
  /detach NAME              remove an adapter
  /scale NAME S             set an adapter's scale
  /merge [NAME]             fold adapters into the weights   /unmerge [NAME]  take them out
  /reset                    forget the conversation          /quit            leave";

fn say(out: &mut impl Write, msg: &str) {
    let _ = writeln!(out, "[{msg}]");
    let _ = out.flush();
}

fn list(model: &Model<impl ModelBackend>) -> String {
    if model.grafts().is_empty() {
        return "no adapters".into();
    }
    model
        .grafts()
        .iter()
        .map(|g| {
            format!(
                "{}{} scale {}{}",
                g.name,
                if g.active { " (active)" } else { "" },
                g.scale,
                if g.merged { " merged" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn command<B: ModelBackend>(
    model: &mut Model<B>,
    line: &str,
    s: &ChatSettings,
) -> Result<Option<String>> {
    let mut parts = line.split_whitespace();
    let cmd = parts.next().unwrap_or("");
    let arg = parts.next();
    let cfg = model.config().clone();
    let attach = |model: &mut Model<B>, spec: AdapterSpec| -> Result<String> {
        let a = adapters::read(&adapters::locate(&spec.path, spec.step)?, &cfg, None)?;
        let name = a.name.clone();
        if model.grafts().iter().any(|g| g.name == name) {
            model.activate_only(&name)?;
            return Ok(format!("using {name} (already attached)"));
        }
        model.attach(&a, spec.scale, Mode::Separate)?;
        model.activate_only(&name)?;
        Ok(format!("attached and using {name}"))
    };
    let msg = match (cmd, arg) {
        ("/help", _) => HELP.to_string(),
        ("/adapters", _) => list(model),
        ("/use", Some("none")) => {
            let names: Vec<String> = model.grafts().iter().map(|g| g.name.clone()).collect();
            for n in names {
                model.set_active(&n, false)?;
            }
            "base model only".into()
        }
        ("/use", Some(n)) => {
            model.activate_only(n)?;
            format!("using {n}")
        }
        ("/attach", Some(p)) => attach(model, p.parse()?)?,
        ("/step", Some(n)) => {
            let run = s.run_dir.clone().ok_or_else(|| {
                Error::invalid("step", "no run directory was given with --adapter")
            })?;
            let step: StepChoice = n.parse()?;
            attach(model, AdapterSpec::from(run).step(step))?
        }
        ("/detach", Some(n)) => {
            model.detach(n)?;
            format!("detached {n}")
        }
        ("/scale", Some(n)) => {
            let v: f32 = parts
                .next()
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| Error::invalid("scale", "usage: /scale NAME VALUE"))?;
            model.set_scale(n, v)?;
            format!("{n} scale {v}")
        }
        ("/merge", Some(n)) => {
            model.set_merged(n, true)?;
            format!("merged {n}")
        }
        ("/merge", None) => {
            model.merge_all()?;
            "merged all active adapters".into()
        }
        ("/unmerge", Some(n)) => {
            model.set_merged(n, false)?;
            format!("unmerged {n}")
        }
        ("/unmerge", None) => {
            model.unmerge_all()?;
            "unmerged all".into()
        }
        _ => return Ok(None),
    };
    Ok(Some(msg))
}

/// Runs the loop over standard input until EOF or `/quit`.
pub fn run<B: ModelBackend>(
    mut model: Model<B>,
    tok: &Tokenizer,
    style: &PromptStyle,
    s: &ChatSettings,
) -> Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = std::io::stdout();
    let mut history: Vec<u32> = Vec::new();
    let stop_tokens = style.stop_tokens(tok);
    let limit = super::input::input_limit(model.config().block_size);
    if interactive {
        eprintln!(
            "graftlm chat — prompt style {}; {}. /help for commands.",
            style.name(),
            list(&model)
        );
    }
    loop {
        if interactive {
            eprint!(">> ");
        }
        let line = match read_line(&mut stdin.lock(), limit)? {
            Line::End => break,
            Line::TooLong => {
                say(
                    &mut out,
                    &format!("error: a line longer than {limit} bytes was skipped (more than the context can take)"),
                );
                continue;
            }
            Line::Text(l) => l,
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if line == "/quit" || line == "/exit" {
            break;
        }
        if line == "/reset" {
            history.clear();
            say(&mut out, "conversation cleared");
            continue;
        }
        if line.starts_with('/') {
            match command(&mut model, line, s) {
                Ok(Some(msg)) => say(&mut out, &msg),
                Ok(None) => say(
                    &mut out,
                    &format!("unknown command {line:?}; /help lists them"),
                ),
                Err(e) => say(&mut out, &format!("error: {e}")),
            }
            continue;
        }
        let styled = style.apply(line, s.sys_prompt.as_deref());
        let turn = if history.is_empty() {
            tok.encode(&styled)?
        } else {
            tok.encode_with(&styled, Some(false))?
        };
        let block = model.config().block_size;
        if history.len() + turn.len() + s.max_new_tokens > block {
            if !history.is_empty() {
                say(&mut out, "context full: starting a new conversation");
            }
            history.clear();
        }
        let ids: Vec<u32> = if history.is_empty() {
            tok.encode(&styled)?
        } else {
            [history.clone(), turn].concat()
        };
        let max_new = s.max_new_tokens.min(block.saturating_sub(ids.len())).max(1);
        let mut opts = GenerateOptions::new(max_new, s.sampling);
        opts.stop_tokens = Some(stop_tokens.clone());
        opts.include_stop_tokens = false;
        let result = graftlm::generate(&model, tok, &ids, &opts, &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            true
        });
        let _ = writeln!(out);
        match result {
            Ok(g) => {
                history = [ids, g.generated_ids].concat();
                if let Some(eos) = tok.eos_id() {
                    history.push(eos);
                }
            }
            Err(e) => say(&mut out, &format!("error: {e}")),
        }
    }
    Ok(())
}
