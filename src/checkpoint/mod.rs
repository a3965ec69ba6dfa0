//! What a checkpoint directory holds: its config, weight files and their tensors (loading them
//! into a model is `model::load`).

mod format;
pub mod names;
mod pickle;
mod pth;
mod tensor;
mod weights;

use std::path::{Path, PathBuf};

pub use format::AdapterFormat;
pub use weights::{HostTensor, TensorMeta, Values, WeightFiles};

use crate::config::{Family, ModelConfig};
use crate::error::{Error, Result};

thread_local! {
    static BASE_LOADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times the calling thread has loaded base weights (adapter switches must not add
/// to it).
pub fn base_load_count() -> usize {
    BASE_LOADS.with(|c| c.get())
}

/// Counts one load of base weights on the calling thread (see [`base_load_count`]).
pub(crate) fn count_base_load() {
    BASE_LOADS.with(|c| c.set(c.get() + 1));
}

/// A base-model checkpoint directory (LitGPT or Hugging Face layout).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// Its model configuration.
    pub config: ModelConfig,
}

/// A summary of a checkpoint for `graftlm inspect`.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub dir: PathBuf,
    /// "LitGPT" or "Hugging Face".
    pub format: &'static str,
    pub config: ModelConfig,
    pub weights_path: PathBuf,
    /// Stored dtypes and how many tensors use each.
    pub dtypes: Vec<(String, usize)>,
    pub tensor_count: usize,
    pub parameter_count: usize,
    /// Tokenizer and other side files present.
    pub files: Vec<String>,
}

impl Checkpoint {
    /// Reads the configuration of `dir` (no weights are read yet).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.exists() {
            return Err(Error::NotFound {
                path: dir.to_path_buf(),
                what: "checkpoint directory".into(),
            });
        }
        if !dir.is_dir() {
            return Err(Error::NotFound {
                path: dir.to_path_buf(),
                what: "a directory (got a file)".into(),
            });
        }
        let config = ModelConfig::from_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Opens the weight files and checks them against the name table without reading data.
    pub fn weights(&self) -> Result<WeightFiles> {
        WeightFiles::open_dir(&self.dir)
    }

    /// Summarises the directory.
    pub fn inspect(&self) -> Result<Inspection> {
        let files = self.weights()?;
        let mut dtypes: Vec<(String, usize)> = Vec::new();
        for m in files.tensors().values() {
            match dtypes.iter_mut().find(|(d, _)| *d == m.dtype) {
                Some((_, n)) => *n += 1,
                None => dtypes.push((m.dtype.clone(), 1)),
            }
        }
        let side = [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "prompt_style.yaml",
            "hyperparameters.yaml",
            "model_config.yaml",
            "config.json",
        ];
        Ok(Inspection {
            dir: self.dir.clone(),
            format: if self.config.family == Family::LitGpt {
                "LitGPT"
            } else {
                "Hugging Face"
            },
            config: self.config.clone(),
            weights_path: files.path.clone(),
            dtypes,
            tensor_count: files.tensors().len(),
            parameter_count: self.config.parameter_count(),
            files: side
                .iter()
                .filter(|f| self.dir.join(f).is_file())
                .map(|f| f.to_string())
                .collect(),
        })
    }
}
