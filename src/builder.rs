//! `ModelBuilder`: a base checkpoint plus adapters, separate or merged, in one call.
//!
//! ```no_run
//! # #[cfg(feature = "flex")] {
//! use graftlm::{backend::Flex, Mode, ModelBuilder};
//! let model = ModelBuilder::new()
//!     .adapter("out/finetune/lora/step-000200".into())
//!     .mode(Mode::Separate)
//!     .build::<Flex>(&Default::default())?;
//! # }
//! # Ok::<(), graftlm::Error>(())
//! ```

use std::path::PathBuf;

use crate::adapters::{self, Adapter, AdapterLocation, Mode, StepChoice};
use crate::backend::ModelBackend;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{Model, WeightDtype};

/// An adapter to load: a file, step folder or run directory, with optional step, name and scale.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdapterSpec {
    pub path: PathBuf,
    pub step: Option<StepChoice>,
    pub name: Option<String>,
    pub scale: f32,
}

impl AdapterSpec {
    /// This spec with the training step `step` of a run directory.
    pub fn step(mut self, step: StepChoice) -> Self {
        self.step = Some(step);
        self
    }

    /// This spec attached under `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// This spec at run-time scale `scale`.
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }
}

impl From<PathBuf> for AdapterSpec {
    fn from(path: PathBuf) -> Self {
        Self {
            path,
            step: None,
            name: None,
            scale: 1.0,
        }
    }
}

impl From<&std::path::Path> for AdapterSpec {
    fn from(path: &std::path::Path) -> Self {
        path.to_path_buf().into()
    }
}

impl From<&str> for AdapterSpec {
    /// A plain path (no `@SCALE` parsing; use `str::parse` for that).
    fn from(path: &str) -> Self {
        PathBuf::from(path).into()
    }
}

impl std::str::FromStr for AdapterSpec {
    type Err = Error;
    /// `PATH` or `PATH@SCALE` (the CLI's `--adapter` syntax).
    fn from_str(s: &str) -> Result<Self> {
        if let Some((p, sc)) = s.rsplit_once('@') {
            if let Ok(scale) = sc.parse::<f32>() {
                if !scale.is_finite() {
                    return Err(Error::invalid(
                        "adapter",
                        format!("scale `{sc}` is not finite"),
                    ));
                }
                return Ok(Self {
                    scale,
                    ..PathBuf::from(p).into()
                });
            }
        }
        Ok(PathBuf::from(s).into())
    }
}

/// What a builder resolved: the base checkpoint and the adapters read for it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub checkpoint: Checkpoint,
    /// How the base was chosen: `"--checkpoint"` or the adapter file that recorded it.
    pub base_from: String,
    pub adapters: Vec<(Adapter, f32)>,
    pub mode: Mode,
    /// How the base's weight matrices are held (default `Auto`: as stored when 16-bit).
    pub weight_dtype: WeightDtype,
}

/// Builds a [`Model`] from a base and adapters.
#[derive(Debug, Clone, Default)]
pub struct ModelBuilder {
    base: Option<PathBuf>,
    specs: Vec<AdapterSpec>,
    loaded: Vec<(Adapter, f32)>,
    mode: Mode,
    weight_dtype: WeightDtype,
}

impl ModelBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The base checkpoint directory (otherwise found from the first adapter).
    pub fn base(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base = Some(dir.into());
        self
    }

    /// An adapter to read from disk.
    pub fn adapter(mut self, spec: AdapterSpec) -> Self {
        self.specs.push(spec);
        self
    }

    /// An adapter already read.
    pub fn loaded_adapter(mut self, adapter: Adapter, scale: f32) -> Self {
        self.loaded.push((adapter, scale));
        self
    }

    /// Separate (default) or merged.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How to hold the base's weight matrices (see [`WeightDtype`]; default `Auto`).
    pub fn weight_dtype(mut self, precision: WeightDtype) -> Self {
        self.weight_dtype = precision;
        self
    }

    /// Finds the base and reads and checks every adapter, without building the model.
    pub fn plan(self) -> Result<Plan> {
        let locs: Vec<(AdapterLocation, &AdapterSpec)> = self
            .specs
            .iter()
            .map(|s| adapters::locate(&s.path, s.step).map(|l| (l, s)))
            .collect::<Result<_>>()?;
        let (base, base_from) = match (&self.base, locs.first()) {
            (Some(b), _) => (b.clone(), "--checkpoint".to_string()),
            (None, Some((loc, _))) => (
                adapters::resolve_base(loc)?,
                loc.weights.display().to_string(),
            ),
            (None, None) => match self.loaded.first() {
                Some((a, _)) => {
                    let rec = a
                        .recorded_base
                        .clone()
                        .ok_or_else(|| Error::invalid("base", "no base checkpoint given"))?;
                    let b = adapters::find_base(&rec, &a.dir).map_err(|_| {
                        Error::invalid("base", format!("cannot find the base `{rec}`"))
                    })?;
                    (b, a.path.display().to_string())
                }
                None => return Err(Error::invalid("base", "no base checkpoint given")),
            },
        };
        let checkpoint = Checkpoint::open(&base)?;
        let mut adapters_out = Vec::new();
        for (loc, spec) in &locs {
            let a = adapters::read(loc, &checkpoint.config, spec.name.as_deref())?;
            adapters_out.push((a, spec.scale));
        }
        adapters_out.extend(self.loaded);
        Ok(Plan {
            checkpoint,
            base_from,
            adapters: adapters_out,
            mode: self.mode,
            weight_dtype: self.weight_dtype,
        })
    }

    /// Loads the base on `device` and grafts every adapter.
    pub fn build<B: ModelBackend>(self, device: &B::Device) -> Result<Model<B>> {
        self.plan()?.build(device)
    }
}

impl Plan {
    /// The folder whose `prompt_style.yaml` applies: a LitGPT fine-tune records the style it trained
    /// with, which wins over the base's; otherwise the base checkpoint.
    pub fn prompt_style_dir(&self) -> PathBuf {
        self.adapters
            .iter()
            .map(|(a, _)| a.dir.clone())
            .find(|d| d.join("prompt_style.yaml").is_file())
            .unwrap_or_else(|| self.checkpoint.dir.clone())
    }

    /// The prompt style for this base and adapters (see [`Plan::prompt_style_dir`]).
    pub fn prompt_style(&self) -> Result<crate::prompt::PromptStyle> {
        crate::prompt::PromptStyle::resolve(&self.prompt_style_dir(), &self.checkpoint.config.name)
    }

    /// Loads the base on `device` and grafts every adapter.
    pub fn build<B: ModelBackend>(&self, device: &B::Device) -> Result<Model<B>> {
        let mut model = self.checkpoint.load_as::<B>(device, self.weight_dtype)?;
        for (a, scale) in &self.adapters {
            model.attach(a, *scale, self.mode)?;
        }
        Ok(model)
    }
}

impl<B: ModelBackend> Model<B> {
    /// A [`ModelBuilder`] for the base checkpoint `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> ModelBuilder {
        ModelBuilder::new().base(dir)
    }
}
