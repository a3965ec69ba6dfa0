//! `Linear<B>`: `y = x·Wᵀ + b (+ Σ s·(x·A)·B)`, the one seam where adapters enter the model.
//!
//! The weight is kept as `[in, out]` (the transpose of the checkpoint's `[out, in]`), laid out
//! as the backend holds it ([`crate::backend::ops::ModelOps::holds_panels`]: 16-column panels
//! that the host kernels stream, else row-major). Low-rank updates are kept beside the weight
//! (computed as `(x·A)·B`, never by rebuilding `W`) or folded into it and taken out again. The
//! forward pass is one [`crate::backend::ops::ModelOps::linear_layer`] call.

use std::sync::Arc;

use burn::prelude::*;

use super::precision::{as_f32, held_tensor, held_transposed, host_f32, WeightDtype};
use crate::backend::held::{panel_tensor, rows_tensor};
use crate::backend::ops::{AffineOp, LinearOp, RowTerm};
use crate::backend::ModelBackend;
use crate::checkpoint::HostTensor;
use crate::kernels::panels::{Layout, WeightShape};

pub(crate) mod columns;
#[cfg(all(test, feature = "flex"))]
mod one_row_speed;
#[cfg(all(test, feature = "flex"))]
pub(crate) mod one_row_tests;
#[cfg(all(test, feature = "flex"))]
mod rows_speed;
mod updates;

pub(crate) use columns::columns;

pub use super::update::{Affine, LowRank, Update};

/// A dense linear layer.
#[derive(Debug, Clone)]
pub struct Linear<B: ModelBackend> {
    /// `[in, out]`, held at `precision`, laid out as `shape` says: row-major, or panels
    /// ([`crate::kernels::panels`]; burn-flex on CPUs with AVX-512F) for the decode kernels.
    weight: Tensor<B, 2>,
    shape: WeightShape,
    /// `[out]`.
    bias: Option<Tensor<B, 1>>,
    /// Low-rank updates in the order attached, and at most one affine correction.
    updates: Vec<Update<B>>,
    /// F32, Bf16 or F16 (never Auto).
    precision: WeightDtype,
    /// A 16-bit weight's base while updates are merged into it (unmerging restores it exactly).
    base: Option<Tensor<B, 2>>,
    /// Whether a merged 16-bit weight is rounded to the held precision (as PEFT and LitGPT do for
    /// 16-bit models: full speed, results move by the rounding) or kept in f32 (exact; the
    /// default, so that a checkpoint's own 16-bit dtype never changes results).
    round_merges: bool,
}

impl<B: ModelBackend> Linear<B> {
    /// Builds the layer from a checkpoint weight stored `[out, in]` and an optional bias `[out]`,
    /// holding the weight at `precision` (`Auto` counts as f32). A weight that is not 2-D, whose
    /// values do not fill its shape, or a bias that is not `[out]` is an
    /// [`Error::InvalidArgument`](crate::error::Error::InvalidArgument).
    pub fn from_host(
        weight: &HostTensor,
        bias: Option<&HostTensor>,
        precision: WeightDtype,
        device: &B::Device,
    ) -> crate::error::Result<Self> {
        let &[out, inp] = weight.shape.as_slice() else {
            return Err(crate::error::Error::invalid(
                "weight",
                format!("expected an [out, in] shape, got {:?}", weight.shape),
            ));
        };
        if out.checked_mul(inp) != Some(weight.data.len()) {
            return Err(crate::error::Error::invalid(
                "weight",
                format!(
                    "{} values for the shape {:?}",
                    weight.data.len(),
                    weight.shape
                ),
            ));
        }
        if let Some(b) = bias.filter(|b| b.shape != [out] || b.data.len() != out) {
            return Err(crate::error::Error::invalid(
                "bias",
                format!(
                    "expected [{out}], got {:?} with {} values",
                    b.shape,
                    b.data.len()
                ),
            ));
        }
        Ok(Self::from_values(
            &[crate::checkpoint::Values::F32(&weight.data)],
            &weight.shape,
            bias,
            precision,
            device,
        ))
    }

    /// [`Linear::from_host`] from borrowed values as stored: `parts` stacked by rows make the
    /// `[out, in]` row-major weight of `shape` `[out, in]` (one part, or a fused q/k/v weight's
    /// three as stored).
    pub(crate) fn from_values(
        weight: &[crate::checkpoint::Values<'_>],
        shape: &[usize],
        bias: Option<&HostTensor>,
        precision: WeightDtype,
        device: &B::Device,
    ) -> Self {
        let (out, inp) = (shape[0], shape[1]);
        let precision = match precision {
            WeightDtype::Auto => WeightDtype::F32,
            p => p,
        };
        assert_eq!(
            weight.iter().map(|p| p.len()).sum::<usize>(),
            out * inp,
            "weight values do not match the shape {shape:?}"
        );
        let quantized = precision
            .is_quantized()
            .then(|| super::blocks::held::<B>(weight, out, inp, precision, device))
            .flatten();
        let (weight, layout, precision) = match quantized {
            Some((w, layout)) => (w, layout, precision),
            None => {
                // A weight that cannot be quantized (its input width is not whole blocks, or a
                // scale would overflow f16) stays f32: exact, and shown as such per layer.
                let precision = if precision.is_quantized() {
                    WeightDtype::F32
                } else {
                    precision
                };
                let layout = if B::holds_panels() {
                    Layout::Panels
                } else {
                    Layout::Rows
                };
                let w = held_transposed::<B>(weight, out, inp, precision, layout, device);
                (w, layout, precision)
            }
        };
        let bias = bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [out]), device));
        Self {
            weight,
            shape: WeightShape {
                k: inp,
                n: out,
                layout,
            },
            bias,
            updates: Vec::new(),
            precision,
            base: None,
            round_merges: false,
        }
    }

    /// How the weight is held (never `Auto`).
    pub fn precision(&self) -> WeightDtype {
        self.precision
    }

    /// Round merged 16-bit weights to the held precision (see the field).
    pub(crate) fn set_round_merges(&mut self, on: bool) {
        self.round_merges = on;
    }

    /// A merged f32 weight `[in, out]`, held as this layer holds merged weights (precision and
    /// layout).
    fn hold(&self, w: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.precision == WeightDtype::F32 || !self.round_merges {
            return self.laid_out(w);
        }
        let dims = w.dims();
        self.laid_out(held_tensor::<B>(
            host_f32(&w),
            dims,
            self.precision,
            &w.device(),
        ))
    }

    /// A row-major `[in, out]` weight in this layer's layout.
    fn laid_out(&self, rows: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.shape.layout {
            Layout::Rows => rows,
            Layout::Panels => panel_tensor(&rows),
            // (Merges into a quantized layer are refused before they start; a requantization
            // that could not be held keeps the values themselves, which the layout could not
            // read, so it is never reached with such values.)
            Layout::Q8_0 | Layout::Q4_0 => {
                super::blocks::requantized(&rows, self.shape.layout).unwrap_or(rows)
            }
        }
    }

    /// A weight held in this layer's layout (the weight, a saved base) as row-major `[in, out]`.
    fn rows_of(&self, held: &Tensor<B, 2>) -> Tensor<B, 2> {
        Self::rows_in(self.shape, held)
    }

    /// [`Linear::rows_of`] for a weight held as `shape` says.
    fn rows_in(shape: WeightShape, held: &Tensor<B, 2>) -> Tensor<B, 2> {
        match shape.layout {
            Layout::Rows => held.clone(),
            Layout::Panels => rows_tensor(held, shape.k, shape.n),
            Layout::Q8_0 | Layout::Q4_0 => crate::backend::held::blocks_rows(held, shape),
        }
    }

    /// The weight as f32 `[in, out]` (a cheap clone when held as f32, row-major).
    pub fn weight_f32(&self) -> Tensor<B, 2> {
        as_f32(&self.rows_of(&self.weight))
    }

    /// Installs an affine correction (kept separate until [`Linear::set_affine_merged`]).
    pub fn set_affine(&mut self, name: Arc<str>, scale: Vec<f32>, bias: Vec<f32>) {
        self.remove_affine();
        let dev = self.weight.device();
        let n = scale.len();
        self.updates.push(Update::Affine(Affine {
            name,
            scale: Tensor::from_data(TensorData::new(scale, [n]), &dev),
            bias: Tensor::from_data(TensorData::new(bias, [n]), &dev),
            active: true,
            saved: None,
        }));
    }

    /// Removes the affine correction (restoring the exact base weights if it was folded in).
    pub fn remove_affine(&mut self) -> Option<Affine<B>> {
        self.set_affine_merged(false);
        let i = self
            .updates
            .iter()
            .position(|u| matches!(u, Update::Affine(_)))?;
        match self.updates.remove(i) {
            Update::Affine(af) => Some(af),
            Update::LowRank(_) => None,
        }
    }

    /// The affine correction, if any.
    pub fn affine(&self) -> Option<&Affine<B>> {
        self.updates.iter().find_map(|u| match u {
            Update::Affine(af) => Some(af),
            Update::LowRank(_) => None,
        })
    }

    /// The affine correction, if any.
    pub fn affine_mut(&mut self) -> Option<&mut Affine<B>> {
        self.updates.iter_mut().find_map(|u| match u {
            Update::Affine(af) => Some(af),
            Update::LowRank(_) => None,
        })
    }

    /// Folds the affine correction into weight and bias (exactly restorable) or takes it out.
    pub fn set_affine_merged(&mut self, merged: bool) {
        let shape = self.shape;
        let (w, b) = (self.weight.clone(), self.bias.clone());
        let Some(af) = self.affine_mut() else {
            return;
        };
        match (merged, af.saved.is_some()) {
            (true, false) => {
                let s = af.scale.clone();
                let scaled = as_f32(&Self::rows_in(shape, &w)) * s.clone().unsqueeze_dim::<2>(0);
                let af_bias = af.bias.clone();
                let b_plus = match &b {
                    Some(b) => b.clone() + af_bias,
                    None => af_bias,
                };
                af.saved = Some((w, b));
                self.bias = Some(b_plus * s);
                self.weight = self.hold(scaled);
            }
            (false, true) => {
                if let Some((w, b)) = af.saved.take() {
                    self.weight = w;
                    self.bias = b;
                }
            }
            _ => {}
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.shape.k
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.shape.n
    }

    /// The weight, `[in, out]` row-major (including merged updates), in the held dtype: f32, or
    /// bf16 / f16 on backends that keep 16-bit weights (see [`Linear::weight_f32`]). A cheap
    /// clone when held row-major; a copy when held as panels (burn-flex on AVX-512 CPUs).
    pub fn weight(&self) -> Tensor<B, 2> {
        self.rows_of(&self.weight)
    }

    /// The weight as held (its storage, whatever the layout) and its shape and layout.
    pub(crate) fn held_weight(&self) -> (&Tensor<B, 2>, WeightShape) {
        (&self.weight, self.shape)
    }

    /// Columns `ids` of the weight as f32 rows `[ids.len(), in]` (a head that serves as the
    /// embedding; `ids` must be below `out_features`).
    pub(crate) fn columns(&self, ids: &[u32]) -> Tensor<B, 2> {
        columns(&self.weight, self.shape, ids)
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }

    /// The attached updates, in the order attached.
    pub fn updates(&self) -> &[Update<B>] {
        &self.updates
    }

    /// The attached low-rank updates, in the order attached.
    pub fn low_rank(&self) -> impl Iterator<Item = &LowRank<B>> {
        self.updates.iter().filter_map(|u| match u {
            Update::LowRank(l) => Some(l),
            Update::Affine(_) => None,
        })
    }

    /// `x`: `[b, t, in]` → `[b, t, out]`, with every active update.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_rows(x, None)
    }

    /// [`Linear::forward`] where each of the `b·t` rows may use its own update: with `rows`, row
    /// `i` gets the separately kept updates named `rows[i]` (none for `None`), whatever their
    /// `active` flag; merged updates are in the weight and apply to every row.
    pub fn forward_rows(&self, x: Tensor<B, 3>, rows: Option<RowGrafts<'_>>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let x2 = x.reshape([b * t, i]);
        let y = self.with_op(b * t, rows, |op| B::linear_layer(x2, op));
        y.reshape([b, t, self.out_features()])
    }

    /// Runs `f` on this layer as a [`LinearOp`] for `m` input rows: the weight, the bias, every
    /// update kept apart (with `rows`, each on the rows that name it) and the affine correction
    /// (whole-batch only).
    pub(crate) fn with_op<R>(
        &self,
        m: usize,
        rows: Option<RowGrafts<'_>>,
        f: impl FnOnce(&LinearOp<'_, B>) -> R,
    ) -> R {
        // Row lists per update (`None`: every row).
        let lists: Vec<(&LowRank<B>, Option<Vec<usize>>)> = self
            .low_rank()
            .filter(|u| u.kept_apart(rows.is_some()))
            .filter_map(|u| match rows {
                None => Some((u, None)),
                Some(sel) => {
                    let idx: Vec<usize> = (0..m)
                        .filter(|&r| sel.get(r).copied().flatten() == Some(&*u.name))
                        .collect();
                    if idx.is_empty() {
                        None
                    } else if idx.len() == m {
                        Some((u, None))
                    } else {
                        Some((u, Some(idx)))
                    }
                }
            })
            .collect();
        let op = LinearOp {
            weight: &self.weight,
            shape: self.shape,
            bias: self.bias.as_ref(),
            terms: lists
                .iter()
                .map(|(u, idx)| RowTerm {
                    a: &u.a,
                    b: &u.b,
                    scale: u.scale,
                    rows: idx.as_deref(),
                })
                .collect(),
            affine: self
                .affine()
                .filter(|a| a.live() && rows.is_none())
                .map(|a| AffineOp {
                    scale: &a.scale,
                    bias: &a.bias,
                }),
        };
        f(&op)
    }
}

#[cfg(all(test, feature = "flex"))]
impl Linear<crate::backend::Flex> {
    /// The outputs of several layers with the same input for one row `x` (`[1, in]`), side by
    /// side, in one parallel pass ([`crate::kernels::linear::decode`]): the same values as
    /// [`Linear::forward`] on each. `None` where a layer has an active LLaMA-Adapter correction
    /// not folded in, or the host kernels cannot read a tensor in place.
    pub(crate) fn one_row_group(
        layers: &[&Self],
        x: &Tensor<crate::backend::Flex, 2>,
    ) -> Option<Vec<f32>> {
        use crate::backend::flex::linear::{one_row, Part};
        if layers.iter().any(|l| l.affine().is_some_and(Affine::live)) {
            return None;
        }
        let terms: Vec<Vec<RowTerm<'_, crate::backend::Flex>>> = layers
            .iter()
            .map(|l| {
                l.low_rank()
                    .filter(|u| u.kept_apart(false))
                    .map(|u| RowTerm {
                        a: &u.a,
                        b: &u.b,
                        scale: u.scale,
                        rows: None,
                    })
                    .collect()
            })
            .collect();
        let parts: Vec<Part<'_>> = layers
            .iter()
            .zip(&terms)
            .map(|(l, t)| Part {
                w: &l.weight,
                shape: l.shape,
                bias: l.bias.as_ref(),
                terms: t,
            })
            .collect();
        one_row(x, &parts)
    }
}

/// Which separately kept updates each row of a batch uses (see [`Linear::forward_rows`]): the
/// name of one graft, or `None` for the base alone.
pub type RowGrafts<'a> = &'a [Option<&'a str>];
