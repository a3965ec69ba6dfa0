//! Loading a checkpoint's weights into a [`Model`]: every name and shape checked first, then
//! one tensor at a time through the checkpoint's name table.

use super::{holds_16bit, Model, WeightDtype};
use crate::backend::ModelBackend;
use crate::checkpoint::{names, Checkpoint, Values, WeightFiles};
use crate::error::{Error, Result};

impl Checkpoint {
    /// Reads all weights (checking names and shapes) and builds the model on `device`, holding
    /// the weight matrices as stored when that is bf16 or f16 and the backend keeps 16-bit
    /// weights ([`WeightDtype::Auto`]; results are the same as held in f32).
    pub fn load<B: ModelBackend>(&self, device: &B::Device) -> Result<Model<B>> {
        self.load_as(device, WeightDtype::Auto)
    }

    /// [`Checkpoint::load`] holding the weight matrices at `precision`: `F32` widens 16-bit
    /// checkpoints (twice the memory, same results), `Bf16` / `F16` round f32 checkpoints (half
    /// the memory and about twice the decoding speed on a CPU, results change by the rounding).
    pub fn load_as<B: ModelBackend>(
        &self,
        device: &B::Device,
        precision: WeightDtype,
    ) -> Result<Model<B>> {
        crate::checkpoint::count_base_load();
        let files = self.weights()?;
        let requested = precision;
        let precision = self.resolve_precision::<B>(&files, precision, device);
        // Check everything first (metadata only), then read one tensor at a time.
        names::load_check(&self.config, &files)?;
        let table: std::collections::HashMap<String, names::Entry> = names::table(&self.config)?
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
    pub fn resolve_precision<B: ModelBackend>(
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
}
