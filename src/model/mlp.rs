//! Feed-forward blocks: GPT-NeoX (`fc → GELU → proj`) and gated Llama/Gemma.

use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, silu};

use super::linear::{Linear, RowGrafts};
use crate::config::MlpKind;

/// The MLP of one block.
#[derive(Debug, Clone)]
pub struct Mlp<B: Backend> {
    pub(crate) kind: MlpKind,
    pub(crate) gelu_tanh: bool,
    /// `fc` (GPT-NeoX) or `fc_1` (gate).
    pub(crate) fc_1: Linear<B>,
    /// `fc_2` (up); absent for GPT-NeoX.
    pub(crate) fc_2: Option<Linear<B>>,
    pub(crate) proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn gelu(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.gelu_tanh {
            gelu_approximate(x)
        } else {
            gelu(x)
        }
    }

    /// `x`: `[b, t, n_embd]`; `rows` as in [`Linear::forward_rows`].
    pub fn forward(&self, x: Tensor<B, 3>, rows: Option<RowGrafts<'_>>) -> Tensor<B, 3> {
        if let Some(y) = self.gated_one_row(&x, rows) {
            return self.proj.forward_rows(y, rows);
        }
        let fc_1 = |x| self.fc_1.forward_rows(x, rows);
        let h = match (self.kind, &self.fc_2) {
            (MlpKind::GptNeox, _) | (_, None) => self.gelu(fc_1(x)),
            (MlpKind::Llama, Some(fc_2)) => {
                let a = fc_1(x.clone());
                let b = fc_2.forward_rows(x, rows);
                match super::host_math::try_silu_mul(&a, &b) {
                    Some(y) => y,
                    None => silu(a) * b,
                }
            }
            (MlpKind::Gemma, Some(fc_2)) => self.gelu(fc_1(x.clone())) * fc_2.forward_rows(x, rows),
        };
        self.proj.forward_rows(h, rows)
    }

    /// A Llama MLP's `silu(x·W₁)·(x·W₂)` for one row (decoding one sequence) with the gate and
    /// up projections in one parallel pass ([`Linear::one_row_group`]); `None` where that does
    /// not apply (other kinds, several rows, per-row adapters, not burn-flex).
    fn gated_one_row(&self, x: &Tensor<B, 3>, rows: Option<RowGrafts<'_>>) -> Option<Tensor<B, 3>> {
        let (MlpKind::Llama, Some(fc_2), None) = (self.kind, &self.fc_2, rows) else {
            return None;
        };
        let [1, 1, k] = x.dims() else {
            return None;
        };
        let n = self.fc_1.out_features();
        if fc_2.out_features() != n {
            return None;
        }
        let mut y = Linear::one_row_group(&[&self.fc_1, fc_2], &x.clone().reshape([1, k]))?;
        let (a, b) = y.split_at_mut(n);
        super::host_math::silu_mul(a, b);
        y.truncate(n);
        Some(Tensor::from_data(
            TensorData::new(y, [1, 1, n]),
            &x.device(),
        ))
    }
}
