//! Finding adapters on disk: a weights file, a step folder, or a training run directory with many
//! steps (LitGPT `step-000200/`, `final/`; Trainer `checkpoint-500/`), and finding the base model
//! an adapter was trained on.

use std::path::{Path, PathBuf};

pub use crate::checkpoint::AdapterFormat;
use crate::error::{Error, Result};

/// Which step of a run directory to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChoice {
    /// The highest step (LitGPT's `final/` counts as after every numbered step).
    Latest,
    /// A numbered step.
    Step(u64),
}

impl std::str::FromStr for StepChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" || s == "final" {
            return Ok(StepChoice::Latest);
        }
        s.parse::<u64>().map(StepChoice::Step).map_err(|_| {
            Error::invalid(
                "step",
                format!("`{s}` is neither a step number nor `latest`"),
            )
        })
    }
}

/// One saved step of a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEntry {
    /// `None` for LitGPT's `final/`.
    pub step: Option<u64>,
    pub dir: PathBuf,
    pub format: AdapterFormat,
}

/// A resolved adapter: its folder, weights file and format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterLocation {
    pub dir: PathBuf,
    pub weights: PathBuf,
    pub format: AdapterFormat,
    /// The step number, when it came from a step folder.
    pub step: Option<u64>,
}

/// The adapter directly in `dir` (a step folder), if any.
fn adapter_in(dir: &Path) -> Option<(PathBuf, AdapterFormat)> {
    for (file, format) in [
        ("lit_model.pth.lora", AdapterFormat::LitGptLora),
        ("lit_model.pth.adapter_v2", AdapterFormat::LitGptAdapterV2),
        ("lit_model.pth.adapter", AdapterFormat::LitGptAdapter),
    ] {
        if dir.join(file).is_file() {
            return Some((dir.join(file), format));
        }
    }
    if dir.join("adapter_config.json").is_file() {
        for f in ["adapter_model.safetensors", "adapter_model.bin"] {
            if dir.join(f).is_file() {
                return Some((dir.join(f), AdapterFormat::PeftLora));
            }
        }
    }
    None
}

fn step_number(name: &str) -> Option<u64> {
    name.strip_prefix("step-")
        .or_else(|| name.strip_prefix("checkpoint-"))
        .and_then(|n| n.parse().ok())
}

/// The saved steps of a run directory, in training order (`final/` last).
pub fn list_steps(run: &Path) -> Result<Vec<StepEntry>> {
    let rd = std::fs::read_dir(run).map_err(|e| Error::io(run, e))?;
    let mut steps = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(run, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let step = if name == "final" {
            None
        } else {
            match step_number(&name) {
                Some(n) => Some(n),
                None => continue,
            }
        };
        if let Some((_, format)) = adapter_in(&path) {
            steps.push(StepEntry {
                step,
                dir: path,
                format,
            });
        }
    }
    steps.sort_by_key(|s| (s.step.is_none(), s.step));
    Ok(steps)
}

/// Resolves a path given by the user (file, step folder, or run directory with `step`).
pub fn locate(path: &Path, step: Option<StepChoice>) -> Result<AdapterLocation> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_path_buf(),
            what: "adapter file or directory".into(),
        });
    }
    if path.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let format = if name.ends_with(".pth.lora") || name.ends_with(".lora") {
            AdapterFormat::LitGptLora
        } else if name.starts_with("adapter_model") {
            AdapterFormat::PeftLora
        } else if name.ends_with(".adapter_v2") {
            AdapterFormat::LitGptAdapterV2
        } else if name.ends_with(".adapter") {
            AdapterFormat::LitGptAdapter
        } else {
            return Err(Error::Unsupported(format!(
                "{}: not a known adapter file (expected lit_model.pth.lora, .adapter, .adapter_v2 or adapter_model.safetensors)",
                path.display()
            )));
        };
        let step = dir
            .file_name()
            .and_then(|n| step_number(&n.to_string_lossy()));
        return Ok(AdapterLocation {
            dir,
            weights: path.to_path_buf(),
            format,
            step,
        });
    }
    if let Some((weights, format)) = adapter_in(path) {
        if let Some(StepChoice::Step(n)) = step {
            let here = path
                .file_name()
                .and_then(|n| step_number(&n.to_string_lossy()));
            if here != Some(n) {
                return Err(Error::invalid(
                    "step",
                    format!(
                        "{} is a single adapter, not a run directory with step {n}",
                        path.display()
                    ),
                ));
            }
        }
        let step_here = path
            .file_name()
            .and_then(|n| step_number(&n.to_string_lossy()));
        return Ok(AdapterLocation {
            dir: path.to_path_buf(),
            weights,
            format,
            step: step_here,
        });
    }
    let steps = list_steps(path)?;
    if steps.is_empty() {
        let has_step_dirs = std::fs::read_dir(path)
            .map(|rd| {
                rd.flatten().any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    e.path().is_dir() && (n == "final" || step_number(&n).is_some())
                })
            })
            .unwrap_or(false);
        return Err(Error::NotFound {
            path: path.to_path_buf(),
            what: if has_step_dirs {
                "adapter weights in its step folders (lit_model.pth.lora/.adapter/.adapter_v2 or adapter_model.safetensors)".into()
            } else {
                "an adapter (lit_model.pth.lora, adapter_config.json) or step folders".into()
            },
        });
    }
    let chosen = match step.unwrap_or(StepChoice::Latest) {
        StepChoice::Latest => steps.last().cloned(),
        StepChoice::Step(n) => steps.iter().find(|s| s.step == Some(n)).cloned(),
    };
    let Some(s) = chosen else {
        let have: Vec<String> = steps
            .iter()
            .map(|s| {
                s.step
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "final".into())
            })
            .collect();
        return Err(Error::invalid(
            "step",
            format!(
                "{} has no step {:?}; it has: {}",
                path.display(),
                step,
                have.join(", ")
            ),
        ));
    };
    let (weights, format) = adapter_in(&s.dir).ok_or_else(|| Error::NotFound {
        path: s.dir.clone(),
        what: "adapter weights".into(),
    })?;
    Ok(AdapterLocation {
        dir: s.dir,
        weights,
        format,
        step: s.step,
    })
}

/// Resolves a recorded base path: absolute as is; relative against the working directory, then
/// against the adapter folder and each of its ancestors. Only directories holding a model config
/// count. Returns the candidates tried on failure.
pub fn find_base(recorded: &str, adapter_dir: &Path) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let rec = Path::new(recorded);
    let is_model =
        |p: &Path| p.join("model_config.yaml").is_file() || p.join("config.json").is_file();
    let mut tried = Vec::new();
    if rec.is_absolute() {
        if is_model(rec) {
            return Ok(rec.to_path_buf());
        }
        tried.push(rec.to_path_buf());
    } else {
        if is_model(rec) {
            return Ok(rec.to_path_buf());
        }
        tried.push(rec.to_path_buf());
        let start = adapter_dir
            .canonicalize()
            .unwrap_or_else(|_| adapter_dir.to_path_buf());
        for anc in start.ancestors() {
            let c = anc.join(rec);
            if is_model(&c) {
                return Ok(c);
            }
            tried.push(c);
        }
    }
    Err(tried)
}
