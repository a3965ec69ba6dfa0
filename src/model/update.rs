//! What a [`super::Linear`] carries beside its weight: adapter updates, one enum of kinds. Each
//! kind enters the forward pass through its own field of the backend's
//! [`crate::backend::ops::LinearOp`], so a fast path serves the kinds it knows and the default
//! (burn ops) the rest, and a new kind cannot be left out of either (the match is exhaustive).

use std::sync::Arc;

use burn::prelude::*;

use crate::backend::ModelBackend;

/// One update of a linear layer.
#[derive(Debug, Clone)]
pub enum Update<B: ModelBackend> {
    /// `s·A·B`, beside the weight or folded into it (LoRA and PEFT's LoRA variants).
    LowRank(LowRank<B>),
    /// `y ← scale ⊙ (y + bias)` after the product (LLaMA-Adapter v2); at most one per linear.
    Affine(Affine<B>),
}

/// A low-rank update `s·A·B` attached to a [`crate::model::Linear`] under a name.
#[derive(Debug, Clone)]
pub struct LowRank<B: ModelBackend> {
    /// The name of the adapter it belongs to.
    pub name: Arc<str>,
    /// `[in, r]`.
    pub a: Tensor<B, 2>,
    /// `[r, out]` (any per-row scaling already folded in).
    pub b: Tensor<B, 2>,
    /// Multiplier applied at run time.
    pub scale: f32,
    /// Whether it contributes to the output.
    pub active: bool,
    /// Whether `scale·A·B` is currently added into the weight.
    pub merged: bool,
}

/// A per-output affine correction `y ← scale ⊙ (y + bias)` (LLaMA-Adapter v2).
#[derive(Debug, Clone)]
pub struct Affine<B: ModelBackend> {
    pub name: Arc<str>,
    /// `[out]`.
    pub scale: Tensor<B, 1>,
    /// `[out]`.
    pub bias: Tensor<B, 1>,
    pub active: bool,
    /// The base weight and bias while the correction is folded into them.
    pub(super) saved: Option<(Tensor<B, 2>, Option<Tensor<B, 1>>)>,
}

impl<B: ModelBackend> LowRank<B> {
    /// Whether the update is computed beside the weight: not folded in, not zero, and active —
    /// or, with per-row adapters (`per_row`), whenever a row names it.
    pub(super) fn kept_apart(&self, per_row: bool) -> bool {
        !self.merged && self.scale != 0.0 && (per_row || self.active)
    }
}

impl<B: ModelBackend> Affine<B> {
    /// Whether the correction applies after the product (active and not folded in).
    pub(super) fn live(&self) -> bool {
        self.active && self.saved.is_none()
    }
}
