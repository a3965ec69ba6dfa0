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
                let (a, b) = self.gate_and_up(fc_2, x, rows);
                match crate::backend::flex::try_silu_mul(&a, &b) {
                    Some(y) => y,
                    None => silu(a) * b,
                }
            }
            (MlpKind::Gemma, Some(fc_2)) => {
                let (a, b) = self.gate_and_up(fc_2, x, rows);
                self.gelu(a) * b
            }
        };
        self.proj.forward_rows(h, rows)
    }

    /// A gated MLP's gate and up projections, `(x·W₁, x·W₂)`. On burn-flex the two run side by
    /// side under one `rayon::join`: a thread done with its share of one picks up work of the
    /// other instead of waiting at its end. Same values either way.
    fn gate_and_up(
        &self,
        fc_2: &Linear<B>,
        x: Tensor<B, 3>,
        rows: Option<RowGrafts<'_>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        #[cfg(feature = "flex")]
        if crate::backend::flex::is_flex::<B>() && crate::kernels::weight::threads() > 1 {
            let x1 = x.clone();
            return rayon::join(
                || self.fc_1.forward_rows(x1, rows),
                || fc_2.forward_rows(x, rows),
            );
        }
        (
            self.fc_1.forward_rows(x.clone(), rows),
            fc_2.forward_rows(x, rows),
        )
    }

    /// A gated MLP's `act(x·W₁)·(x·W₂)` for one row (decoding one sequence) with the gate and
    /// up projections in one parallel pass ([`Linear::one_row_group`]); `None` where that does
    /// not apply (GPT-NeoX, several rows, per-row adapters, not burn-flex).
    fn gated_one_row(&self, x: &Tensor<B, 3>, rows: Option<RowGrafts<'_>>) -> Option<Tensor<B, 3>> {
        let (MlpKind::Llama | MlpKind::Gemma, Some(fc_2), None) = (self.kind, &self.fc_2, rows)
        else {
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
        let dev = x.device();
        if self.kind == MlpKind::Gemma {
            // The same tensor ops as the two-call path, on the two halves.
            let b = y.split_off(n);
            let a = Tensor::from_data(TensorData::new(y, [1, 1, n]), &dev);
            let b = Tensor::from_data(TensorData::new(b, [1, 1, n]), &dev);
            return Some(self.gelu(a) * b);
        }
        let (a, b) = y.split_at_mut(n);
        crate::kernels::math::silu_mul(a, b);
        y.truncate(n);
        Some(Tensor::from_data(TensorData::new(y, [1, 1, n]), &dev))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::prelude::*;

    use super::Mlp;
    use crate::backend::Flex;
    use crate::config::MlpKind;
    use crate::model::linear::one_row_tests::{layer, values};
    use crate::model::WeightDtype;

    /// Decoding one row, the gate and up projections in one pass give the bits of the two
    /// separate calls (taken here through the per-row path, which calls each linear alone), for
    /// Llama and Gemma MLPs, f32 and bf16, with a low-rank term on the gate.
    #[test]
    fn one_pass_gate_and_up_match_two_calls() {
        for kind in [MlpKind::Llama, MlpKind::Gemma] {
            for p in [WeightDtype::F32, WeightDtype::Bf16] {
                let (k, inter) = (48, 136);
                let mlp = Mlp::<Flex> {
                    kind,
                    gelu_tanh: true,
                    fc_1: layer(inter, k, p, 1, &[8]),
                    fc_2: Some(layer(inter, k, p, 2, &[])),
                    proj: layer(k, inter, p, 3, &[]),
                };
                let x = Tensor::<Flex, 3>::from_data(
                    TensorData::new(values(k, 4), [1, 1, k]),
                    &Default::default(),
                );
                let bits = |t: Tensor<Flex, 3>| -> Vec<u32> {
                    let v = t.into_data().into_vec::<f32>().unwrap();
                    v.iter().map(|v| v.to_bits()).collect()
                };
                let one = bits(mlp.forward(x.clone(), None));
                let two = bits(mlp.forward(x.clone(), Some(&[Some("a0")])));
                assert_eq!(one, two, "{kind:?} {p:?}");
                // The term is there: without it the output differs.
                let none = bits(mlp.forward(x, Some(&[None])));
                assert_ne!(one, none, "{kind:?} {p:?}");
            }
        }
    }
}
