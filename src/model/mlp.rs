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
}
