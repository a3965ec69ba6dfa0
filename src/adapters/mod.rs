//! Adapters: reading LitGPT and PEFT LoRA checkpoints (any training step), finding their base,
//! and grafting them onto a [`Model`] — kept separate (swap in milliseconds, base untouched) or
//! merged into the weights (full speed), and back.
//!
//! An [`Adapter`] is plain host data checked against a base configuration; [`Model::attach`]
//! validates every target before touching the model, so a failed attach changes nothing.

mod batch;
pub(crate) mod bounds;
pub mod discover;
mod graft_llama;
mod litgpt;
mod llama_adapter;
pub mod lora;
mod peft;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use discover::{
    find_base, list_steps, locate, AdapterFormat, AdapterLocation, StepChoice, StepEntry,
};
pub use lora::{combine, Adapter, Combine, LlamaAdapterParts, LowRankUpdate};

use crate::backend::ModelBackend;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{GraftInfo, Model};

/// Whether adapters stay beside the weights or are folded into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `y = xW + s·(xA)B`: switch, rescale or detach instantly; base weights untouched.
    #[default]
    Separate,
    /// `W ← W + s·AB`: base speed; unmerge restores the base.
    Merged,
}

/// The name an adapter gets by default: its folder, with the run folder for step folders.
pub fn default_name(loc: &AdapterLocation) -> String {
    let leaf = loc
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adapter".into());
    let is_step = leaf == "final" || leaf.starts_with("step-") || leaf.starts_with("checkpoint-");
    match (is_step, loc.dir.parent().and_then(|p| p.file_name())) {
        (true, Some(run)) => format!("{}/{leaf}", run.to_string_lossy()),
        _ => leaf,
    }
}

/// The base model path an adapter records (`hyperparameters.yaml` `checkpoint_dir`,
/// `adapter_config.json` `base_model_name_or_path`), without reading its weights.
pub fn recorded_base(loc: &AdapterLocation) -> Result<Option<String>> {
    Ok(match loc.format {
        AdapterFormat::LitGptLora
        | AdapterFormat::LitGptAdapter
        | AdapterFormat::LitGptAdapterV2 => litgpt::hparams(&loc.dir)?.checkpoint_dir,
        AdapterFormat::PeftLora => peft::config(loc)?.base,
    })
}

/// Finds the base model of an adapter (see [`find_base`]); a clear error when it cannot.
pub fn resolve_base(loc: &AdapterLocation) -> Result<PathBuf> {
    let Some(rec) = recorded_base(loc)? else {
        return Err(Error::NotFound {
            path: loc.dir.clone(),
            what: "the base model (the adapter records none; pass --checkpoint)".into(),
        });
    };
    find_base(&rec, &loc.dir).map_err(|tried| Error::NotFound {
        path: loc.dir.clone(),
        what: format!(
            "its base model `{rec}` (tried {}; pass --checkpoint)",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Reads the adapter at `loc` for a base with configuration `cfg`, checking every tensor.
pub fn read(loc: &AdapterLocation, cfg: &ModelConfig, name: Option<&str>) -> Result<Adapter> {
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| default_name(loc));
    match loc.format {
        AdapterFormat::LitGptLora => litgpt::read(loc, cfg, &name),
        AdapterFormat::PeftLora => peft::read(loc, cfg, &name),
        AdapterFormat::LitGptAdapter | AdapterFormat::LitGptAdapterV2 => {
            llama_adapter::read(loc, cfg, &name)
        }
    }
}

/// Convenience: [`locate`] then [`read`].
pub fn load(
    path: &Path,
    step: Option<StepChoice>,
    cfg: &ModelConfig,
    name: Option<&str>,
) -> Result<Adapter> {
    read(&locate(path, step)?, cfg, name)
}

/// Several adapters with their scales: the data a `ModelBuilder` grafts.
#[derive(Debug, Clone, Default)]
pub struct AdapterSet {
    pub entries: Vec<(Adapter, f32)>,
}

impl AdapterSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an adapter with a scale.
    pub fn push(&mut self, adapter: Adapter, scale: f32) {
        self.entries.push((adapter, scale));
    }
}

impl<B: ModelBackend> Model<B> {
    /// Refuses merging into quantized weights: requantizing a merged sum would change every
    /// block the adapter touches, and nothing but the original blocks could undo it exactly.
    fn merge_allowed(&self) -> Result<()> {
        let dtype = self.weight_dtype();
        if dtype.is_quantized() {
            return Err(Error::Unsupported(format!(
                "merging an adapter into {dtype} weights; attach it separate (the default), or \
                 load the base with another --weight-dtype to merge"
            )));
        }
        Ok(())
    }
}

/// Whether a graft is a LLaMA-Adapter (prefix, affine, norms) rather than LoRA updates.
fn is_llama(g: &GraftInfo) -> bool {
    g.format.is_llama_adapter()
}

impl<B: ModelBackend> Model<B> {
    /// Grafts `adapter` with run-time `scale`, separate or merged. Everything is checked first; on
    /// error the model is unchanged.
    pub fn attach(&mut self, adapter: &Adapter, scale: f32, mode: Mode) -> Result<()> {
        if !scale.is_finite() {
            return Err(Error::invalid("scale", format!("{scale} is not finite")));
        }
        if self.grafts().iter().any(|g| g.name == adapter.name) {
            return Err(Error::invalid(
                "adapter",
                format!("an adapter named `{}` is already attached", adapter.name),
            ));
        }
        let mixing = if adapter.llama.is_empty() {
            self.grafts().iter().any(is_llama)
        } else {
            !self.grafts().is_empty()
        };
        if mixing {
            return Err(Error::Unsupported(
                "a LLaMA-Adapter cannot share a model with other adapters (detach them first)"
                    .into(),
            ));
        }
        if mode == Mode::Merged {
            self.merge_allowed()?;
        }
        if !adapter.llama.is_empty() {
            return self.attach_llama(adapter, scale, mode);
        }
        for (lin, u) in &adapter.updates {
            let l = self.linear(lin).ok_or_else(|| Error::UnexpectedTensors {
                path: adapter.path.clone(),
                count: 1,
                examples: format!("an update for `{lin}`, which this model does not have"),
            })?;
            let want = [l.out_features(), l.in_features()];
            // `A` `[r, in]` and `B` `[out, r]`, each shape matching its data (an `Adapter` can be
            // built by hand).
            let two = |t: &crate::checkpoint::HostTensor| match t.shape[..] {
                [p, q] if p.checked_mul(q) == Some(t.data.len()) => Some([p, q]),
                _ => None,
            };
            let (a, b) = (two(&u.a).unwrap_or_default(), two(&u.b).unwrap_or_default());
            let got = [b[0], a[1]];
            if want != got || a[0] != b[1] || a[0] == 0 {
                return Err(Error::ShapeMismatch {
                    path: adapter.path.clone(),
                    name: lin.clone(),
                    expected: want.to_vec(),
                    found: got.to_vec(),
                });
            }
            bounds::check_term(
                Some(adapter),
                lin,
                || l.max_abs_base(),
                bounds::term_bound(u),
                scale,
            )?;
        }
        let name: Arc<str> = Arc::from(adapter.name.as_str());
        // The factors as the model holds them (transposed, maybe narrowed), made in parallel
        // over the linears where there are threads, then attached in one go.
        let updates: Vec<(&String, &LowRankUpdate)> = adapter.updates.iter().collect();
        let model = &*self;
        let factors = |(lin, u): &(&String, &LowRankUpdate)| {
            model
                .linear(lin)
                .map(|l| l.factors_of(&u.a.data, &u.b.data, u.rank()))
        };
        let factors: Vec<_> = B::each(updates.iter().collect(), factors);
        for ((lin, _), f) in updates.into_iter().zip(factors) {
            if let (Some(l), Some(f)) = (self.linear_mut(lin), f) {
                l.push_factors(name.clone(), f, scale);
                if mode == Mode::Merged {
                    l.set_merged(&name, true);
                }
            }
        }
        self.grafts_mut().push(GraftInfo {
            name: adapter.name.clone(),
            source: adapter.path.display().to_string(),
            format: adapter.format,
            step: adapter.step,
            scale,
            active: true,
            merged: mode == Mode::Merged,
            linears: adapter.updates.keys().cloned().collect(),
            norms: Vec::new(),
            prefix_layers: Vec::new(),
        });
        Ok(())
    }

    fn graft_index(&self, name: &str) -> Result<usize> {
        self.grafts()
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| {
                let have: Vec<&str> = self.grafts().iter().map(|g| g.name.as_str()).collect();
                Error::invalid(
                    "adapter",
                    format!(
                        "no adapter named `{name}` is attached (attached: {})",
                        have.join(", ")
                    ),
                )
            })
    }

    /// Removes an adapter (unmerging it first if merged).
    pub fn detach(&mut self, name: &str) -> Result<()> {
        let i = self.graft_index(name)?;
        let g = self.grafts_mut().remove(i);
        if is_llama(&g) {
            self.detach_llama(&g);
            return Ok(());
        }
        for lin in &g.linears {
            if let Some(l) = self.linear_mut(lin) {
                l.remove_update(name);
            }
        }
        Ok(())
    }

    /// Turns an adapter's contribution on or off (a merged adapter is unmerged when turned off).
    pub fn set_active(&mut self, name: &str, active: bool) -> Result<()> {
        let i = self.graft_index(name)?;
        if is_llama(&self.grafts()[i]) {
            return self.set_llama_active(i, active);
        }
        if !active && self.grafts()[i].merged {
            self.set_merged(name, false)?;
        }
        let linears = self.grafts()[i].linears.clone();
        for lin in &linears {
            if let Some(u) = self.linear_mut(lin).and_then(|l| l.update_mut(name)) {
                u.active = active;
            }
        }
        self.grafts_mut()[i].active = active;
        Ok(())
    }

    /// Makes `name` the only active adapter (the others stay attached, inactive).
    pub fn activate_only(&mut self, name: &str) -> Result<()> {
        self.graft_index(name)?;
        let names: Vec<String> = self.grafts().iter().map(|g| g.name.clone()).collect();
        for n in names {
            self.set_active(&n, n == name)?;
        }
        Ok(())
    }

    /// Changes an adapter's scale (adjusting the weights if it is merged).
    pub fn set_scale(&mut self, name: &str, scale: f32) -> Result<()> {
        if !scale.is_finite() {
            return Err(Error::invalid("scale", format!("{scale} is not finite")));
        }
        let i = self.graft_index(name)?;
        if is_llama(&self.grafts()[i]) && scale != 1.0 {
            return Err(Error::Unsupported(
                "scaling a LLaMA-Adapter (only LoRA adapters have a scale)".into(),
            ));
        }
        let linears = self.grafts()[i].linears.clone();
        for lin in &linears {
            if let Some(l) = self.linear(lin) {
                if let Some(bound) = l.update_bound(name) {
                    bounds::check_term(None, lin, || l.max_abs_base(), bound, scale)?;
                }
            }
        }
        for lin in &linears {
            if let Some(l) = self.linear_mut(lin) {
                l.set_scale(name, scale);
            }
        }
        self.grafts_mut()[i].scale = scale;
        Ok(())
    }

    /// Folds an attached adapter into the weights (`true`) or takes it out again (`false`).
    pub fn set_merged(&mut self, name: &str, merged: bool) -> Result<()> {
        let i = self.graft_index(name)?;
        if merged {
            self.merge_allowed()?;
        }
        if merged && !self.grafts()[i].active {
            return Err(Error::invalid(
                "adapter",
                format!("`{name}` is inactive; activate it before merging"),
            ));
        }
        let llama = is_llama(&self.grafts()[i]);
        let linears = self.grafts()[i].linears.clone();
        for lin in &linears {
            if let Some(l) = self.linear_mut(lin) {
                if llama {
                    l.set_affine_merged(merged);
                } else {
                    l.set_merged(name, merged);
                }
            }
        }
        self.grafts_mut()[i].merged = merged;
        Ok(())
    }

    /// Merges every active adapter.
    pub fn merge_all(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .grafts()
            .iter()
            .filter(|g| g.active)
            .map(|g| g.name.clone())
            .collect();
        names.iter().try_for_each(|n| self.set_merged(n, true))
    }

    /// Unmerges every merged adapter.
    pub fn unmerge_all(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .grafts()
            .iter()
            .filter(|g| g.merged)
            .map(|g| g.name.clone())
            .collect();
        names.iter().try_for_each(|n| self.set_merged(n, false))
    }
}
