//! `Linear<B>`: `y = x·Wᵀ + b (+ Σ s·(x·A)·B)`, the one seam where adapters enter the model.
//!
//! The weight is kept as `[in, out]` (the transpose of the checkpoint's `[out, in]`) so the
//! forward pass is a plain matmul on every backend. Low-rank updates are kept beside the weight
//! (computed as `(x·A)·B`, never by rebuilding `W`) or folded into it and taken out again.

use std::sync::Arc;

use burn::prelude::*;

use super::matvec::{try_linear, RowTerm};
use crate::checkpoint::HostTensor;

/// A low-rank update `s·A·B` attached to a [`Linear`] under a name.
#[derive(Debug, Clone)]
pub struct LowRank<B: Backend> {
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
pub struct Affine<B: Backend> {
    pub name: Arc<str>,
    /// `[out]`.
    pub scale: Tensor<B, 1>,
    /// `[out]`.
    pub bias: Tensor<B, 1>,
    pub active: bool,
    /// The base weight and bias while the correction is folded into them.
    saved: Option<(Tensor<B, 2>, Option<Tensor<B, 1>>)>,
}

/// A dense linear layer.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    weight: Tensor<B, 2>,
    /// `[out]`.
    bias: Option<Tensor<B, 1>>,
    updates: Vec<LowRank<B>>,
    affine: Option<Affine<B>>,
}

impl<B: Backend> Linear<B> {
    /// Builds the layer from a checkpoint weight stored `[out, in]` and an optional bias `[out]`.
    pub fn from_host(weight: &HostTensor, bias: Option<&HostTensor>, device: &B::Device) -> Self {
        let (out, inp) = (weight.shape[0], weight.shape[1]);
        let t = transpose(&weight.data, out, inp);
        let weight = Tensor::from_data(TensorData::new(t, [inp, out]), device);
        let bias = bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [out]), device));
        Self {
            weight,
            bias,
            updates: Vec::new(),
            affine: None,
        }
    }

    /// Installs an affine correction (kept separate until [`Linear::set_affine_merged`]).
    pub fn set_affine(&mut self, name: Arc<str>, scale: Vec<f32>, bias: Vec<f32>) {
        self.remove_affine();
        let dev = self.weight.device();
        let n = scale.len();
        self.affine = Some(Affine {
            name,
            scale: Tensor::from_data(TensorData::new(scale, [n]), &dev),
            bias: Tensor::from_data(TensorData::new(bias, [n]), &dev),
            active: true,
            saved: None,
        });
    }

    /// Removes the affine correction (restoring the exact base weights if it was folded in).
    pub fn remove_affine(&mut self) -> Option<Affine<B>> {
        self.set_affine_merged(false);
        self.affine.take()
    }

    /// The affine correction, if any.
    pub fn affine_mut(&mut self) -> Option<&mut Affine<B>> {
        self.affine.as_mut()
    }

    /// Folds the affine correction into weight and bias (exactly restorable) or takes it out.
    pub fn set_affine_merged(&mut self, merged: bool) {
        let Some(af) = self.affine.as_mut() else {
            return;
        };
        match (merged, af.saved.is_some()) {
            (true, false) => {
                let (w, b) = (self.weight.clone(), self.bias.clone());
                let s = af.scale.clone();
                self.weight = w.clone() * s.clone().unsqueeze_dim::<2>(0);
                let b_plus = match &b {
                    Some(b) => b.clone() + af.bias.clone(),
                    None => af.bias.clone(),
                };
                self.bias = Some(b_plus * s);
                af.saved = Some((w, b));
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
        self.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The weight, `[in, out]` (including merged updates).
    pub fn weight(&self) -> &Tensor<B, 2> {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }

    /// The attached low-rank updates.
    pub fn updates(&self) -> &[LowRank<B>] {
        &self.updates
    }

    /// Attaches an update (kept separate, not merged).
    pub fn push_update(&mut self, mut u: LowRank<B>) {
        u.merged = false;
        self.updates.push(u);
    }

    /// Detaches the update called `name`, taking it out of the weight first if merged.
    pub fn remove_update(&mut self, name: &str) -> Option<LowRank<B>> {
        let i = self.updates.iter().position(|u| &*u.name == name)?;
        self.set_merged(name, false);
        Some(self.updates.remove(i))
    }

    /// Mutable access to the update called `name`.
    pub fn update_mut(&mut self, name: &str) -> Option<&mut LowRank<B>> {
        self.updates.iter_mut().find(|u| &*u.name == name)
    }

    fn delta(u: &LowRank<B>, scale: f32) -> Tensor<B, 2> {
        u.a.clone().matmul(u.b.clone()) * scale
    }

    /// Folds the update into the weight (`merged = true`) or takes it out again.
    /// Returns `false` when there is no such update.
    pub fn set_merged(&mut self, name: &str, merged: bool) -> bool {
        let Some(i) = self.updates.iter().position(|u| &*u.name == name) else {
            return false;
        };
        let u = &self.updates[i];
        if u.merged != merged {
            let d = Self::delta(u, u.scale);
            self.weight = if merged {
                self.weight.clone() + d
            } else {
                self.weight.clone() - d
            };
            self.updates[i].merged = merged;
        }
        true
    }

    /// Changes the run-time scale of an update, adjusting the weight if it is merged.
    pub fn set_scale(&mut self, name: &str, scale: f32) -> bool {
        let Some(i) = self.updates.iter().position(|u| &*u.name == name) else {
            return false;
        };
        let u = &self.updates[i];
        if u.merged && u.scale != scale {
            let d = Self::delta(u, scale - u.scale);
            self.weight = self.weight.clone() + d;
        }
        self.updates[i].scale = scale;
        true
    }

    /// `x`: `[b, t, in]` → `[b, t, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let x2 = x.reshape([b * t, i]);
        let active = || {
            self.updates
                .iter()
                .filter(|u| u.active && !u.merged && u.scale != 0.0)
        };
        let terms: Vec<RowTerm<'_, B>> = active()
            .map(|u| RowTerm {
                a: &u.a,
                b: &u.b,
                scale: u.scale,
            })
            .collect();
        let mut y = match try_linear(&x2, &self.weight, self.bias.as_ref(), &terms) {
            Some(y) => y,
            None => {
                let mut y = x2.clone().matmul(self.weight.clone());
                if let Some(bias) = &self.bias {
                    y = y + bias.clone().unsqueeze_dim::<2>(0);
                }
                for u in active() {
                    y = y + x2.clone().matmul(u.a.clone()).matmul(u.b.clone()) * u.scale;
                }
                y
            }
        };
        if let Some(af) = self
            .affine
            .as_ref()
            .filter(|a| a.active && a.saved.is_none())
        {
            y = (y + af.bias.clone().unsqueeze_dim::<2>(0))
                * af.scale.clone().unsqueeze_dim::<2>(0);
        }
        y.reshape([b, t, self.out_features()])
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major, in 32×32 blocks (cache-friendly for the
/// large matrices a load transposes).
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 32;
    let mut t = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        for c0 in (0..cols).step_by(BLOCK) {
            let c1 = (c0 + BLOCK).min(cols);
            for r in r0..r1 {
                let src = &data[r * cols + c0..r * cols + c1];
                for (c, &v) in (c0..c1).zip(src) {
                    t[c * rows + r] = v;
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_any_shape() {
        for (rows, cols) in [(1, 1), (1, 70), (33, 1), (31, 65), (64, 64), (100, 37)] {
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = super::transpose(&data, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        data[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
