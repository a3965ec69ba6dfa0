//! What a checkpoint directory holds, and loading it into a [`Model`].

pub mod names;
mod pickle;
mod pth;
mod weights;

use std::path::{Path, PathBuf};

use burn::prelude::Backend;

pub use weights::{HostTensor, TensorMeta, Values, WeightFiles};

use crate::config::{Family, ModelConfig};
use crate::error::{Error, Result};
use crate::model::{holds_16bit, Model, WeightDtype};

thread_local! {
    static BASE_LOADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times the calling thread has loaded base weights (adapter switches must not add
/// to it).
pub fn base_load_count() -> usize {
    BASE_LOADS.with(|c| c.get())
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

    /// Reads all weights (checking names and shapes) and builds the model on `device`, holding
    /// the weight matrices as stored when that is bf16 or f16 and the backend keeps 16-bit
    /// weights ([`WeightDtype::Auto`]; results are the same as held in f32).
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<Model<B>> {
        self.load_as(device, WeightDtype::Auto)
    }

    /// [`Checkpoint::load`] holding the weight matrices at `precision`: `F32` widens 16-bit
    /// checkpoints (twice the memory, same results), `Bf16` / `F16` round f32 checkpoints (half
    /// the memory and about twice the decoding speed on a CPU, results change by the rounding).
    pub fn load_as<B: Backend>(
        &self,
        device: &B::Device,
        precision: WeightDtype,
    ) -> Result<Model<B>> {
        BASE_LOADS.with(|c| c.set(c.get() + 1));
        let files = self.weights()?;
        let requested = precision;
        let precision = self.resolve_precision::<B>(&files, precision, device);
        // Check everything first (metadata only), then read one tensor at a time.
        names::load_check(&self.config, &files)?;
        let table: std::collections::HashMap<String, names::Entry> = names::table(&self.config)
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let head_is_embedding = names::head_is_the_embedding(&self.config, &files);
        let model = Model::from_source_tied(
            self.config.clone(),
            &mut |name: &str| {
                let entry = table.get(name).ok_or_else(|| Error::MissingTensor {
                    path: files.path.clone(),
                    name: name.to_string(),
                    expected: vec![],
                })?;
                names::read_entry(&self.config, &files, entry)
            },
            &mut |name: &str, f: &mut dyn FnMut(&[Values<'_>], &[usize])| match table.get(name) {
                Some(entry) => names::with_entry_in_place(&self.config, &files, entry, f),
                None => Ok(false),
            },
            precision,
            head_is_embedding,
            device,
        );
        let mut model = model?;
        // An explicit 16-bit choice merges at 16 bits (speed); `Auto` merges exactly, in f32.
        model.set_round_merges(requested != WeightDtype::Auto);
        Ok(model)
    }

    /// What `precision` means for this checkpoint on `device`: `Auto` follows the stored dtype
    /// of the weight matrices (every 2-D tensor in the weight files).
    pub fn resolve_precision<B: Backend>(
        &self,
        files: &WeightFiles,
        precision: WeightDtype,
        device: &B::Device,
    ) -> WeightDtype {
        let matrices = files
            .tensors()
            .values()
            .filter(|m| m.shape.len() == 2)
            .map(|m| m.dtype.as_str());
        precision.resolve(matrices, holds_16bit::<B>(device))
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
