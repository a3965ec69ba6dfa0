//! Several sequences, each with its own adapter, in one forward pass (as S-LoRA and Punica
//! serve many LoRA fine-tunes from one base): every base weight is read once for all rows, and
//! each row adds only its own adapter's low-rank terms (gathered per adapter).
//!
//! The adapter of a row is named explicitly; the `active` flags of separately kept LoRA adapters
//! do not apply here. Merged adapters are in the weights and so apply to every row; LLaMA-Adapter
//! grafts change attention itself and cannot be chosen per row.

use burn::prelude::*;

use super::is_llama;
use crate::backend::ModelBackend;
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::model::Model;

impl<B: ModelBackend> Model<B> {
    /// One decoding step for `tokens.len()` sequences at once: `tokens[i]` is the next token of
    /// sequence `i`, `caches[i]` its cache (advanced by one), `adapters[i]` the separately kept
    /// LoRA adapter it uses (`None`: the base alone). Returns logits `[n, padded_vocab]`, row `i`
    /// equal (up to rounding) to a one-sequence [`Model::forward_with`] of the same inputs.
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [KvCache<B>],
        adapters: &[Option<&str>],
    ) -> Result<Tensor<B, 2>> {
        if tokens.len() != caches.len() || tokens.len() != adapters.len() {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{} tokens, {} caches and {} adapter choices: give one of each per sequence",
                    tokens.len(),
                    caches.len(),
                    adapters.len()
                ),
            ));
        }
        self.check_row_adapters(adapters)?;
        self.forward_rows(tokens, caches, false, Some(adapters))
    }

    /// [`Model::forward`] with the LoRA adapter `adapter` (or none) for this sequence, whatever
    /// the `active` flags (the prompt of a sequence that [`Model::forward_batch`] continues).
    pub fn forward_with(
        &self,
        ids: &[u32],
        cache: &mut KvCache<B>,
        last_only: bool,
        adapter: Option<&str>,
    ) -> Result<Tensor<B, 2>> {
        self.check_row_adapters(&[adapter])?;
        let rows = vec![adapter; ids.len()];
        self.forward_rows(ids, std::slice::from_mut(cache), last_only, Some(&rows))
    }

    /// Checks adapter choices for [`Model::forward_batch`] (names attached, LoRA, not merged; no
    /// active LLaMA-Adapter).
    pub(crate) fn check_row_adapters(&self, names: &[Option<&str>]) -> Result<()> {
        if let Some(g) = self.grafts().iter().find(|g| is_llama(g) && g.active) {
            return Err(Error::invalid(
                "adapters",
                format!(
                    "the LLaMA-Adapter `{}` is active and changes attention for every sequence; \
                     deactivate it to choose adapters per sequence",
                    g.name
                ),
            ));
        }
        for name in names.iter().flatten() {
            let Some(g) = self.grafts().iter().find(|g| g.name == *name) else {
                let have: Vec<&str> = self.grafts().iter().map(|g| g.name.as_str()).collect();
                return Err(Error::invalid(
                    "adapters",
                    format!(
                        "no adapter named `{name}` is attached (attached: {})",
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ),
                ));
            };
            if is_llama(g) {
                return Err(Error::invalid(
                    "adapters",
                    format!("`{name}` is a LLaMA-Adapter; only LoRA adapters can be chosen per sequence"),
                ));
            }
            if g.merged {
                return Err(Error::invalid(
                    "adapters",
                    format!(
                        "`{name}` is merged into the weights, so it applies to every sequence; \
                         unmerge it to choose it per sequence"
                    ),
                ));
            }
        }
        Ok(())
    }
}
