//! Feed-forward blocks: GPT-NeoX (`fc → GELU → proj`) and gated Llama/Gemma.

use burn::prelude::*;

use super::build::Loader;
use super::linear::{Linear, RowGrafts};
use crate::backend::ops::Gate;
use crate::backend::reference::activate;
use crate::backend::ModelBackend;
use crate::config::{LinearId, MlpKind};
use crate::error::Result;

/// The MLP of one block.
#[derive(Debug, Clone)]
pub struct Mlp<B: ModelBackend> {
    pub(crate) kind: MlpKind,
    pub(crate) gelu_tanh: bool,
    /// `fc` (GPT-NeoX) or `fc_1` (gate).
    pub(crate) fc_1: Linear<B>,
    /// `fc_2` (up); absent for GPT-NeoX.
    pub(crate) fc_2: Option<Linear<B>>,
    pub(crate) proj: Linear<B>,
}

impl<B: ModelBackend> Mlp<B> {
    /// Block `i`'s MLP from `ld`: `fc` and `proj` (GPT-NeoX), or gate, up and `proj`.
    pub(crate) fn load(ld: &mut Loader<'_, '_, B>, i: usize) -> Result<Self> {
        let cfg = ld.cfg;
        let bias = cfg.mlp_bias;
        let (fc_1, fc_2) = match cfg.mlp {
            MlpKind::GptNeox => (ld.linear(LinearId::Fc(i), bias)?, None),
            MlpKind::Llama | MlpKind::Gemma => (
                ld.linear(LinearId::Gate(i), bias)?,
                Some(ld.linear(LinearId::Up(i), bias)?),
            ),
        };
        Ok(Self {
            kind: cfg.mlp,
            gelu_tanh: cfg.gelu_tanh,
            fc_1,
            fc_2,
            proj: ld.linear(LinearId::MlpProj(i), bias)?,
        })
    }

    /// The activation: `silu` for Llama, else GELU (tanh-approximated or exact).
    fn act(&self) -> Gate {
        match (self.kind, self.gelu_tanh) {
            (MlpKind::Llama, _) => Gate::Silu,
            (_, true) => Gate::GeluTanh,
            (_, false) => Gate::Gelu,
        }
    }

    /// `x`: `[b, t, n_embd]`; `rows` as in [`Linear::forward_rows`].
    pub fn forward(&self, x: Tensor<B, 3>, rows: Option<RowGrafts<'_>>) -> Tensor<B, 3> {
        let h = match (self.kind, &self.fc_2) {
            (MlpKind::GptNeox, _) | (_, None) => {
                activate(self.fc_1.forward_rows(x, rows), self.act())
            }
            (MlpKind::Llama | MlpKind::Gemma, Some(fc_2)) => {
                let act = self.act();
                let [b, t, k] = x.dims();
                let x2 = x.reshape([b * t, k]);
                let y = self.fc_1.with_op(b * t, rows, |gate| {
                    fc_2.with_op(b * t, rows, |up| B::gated(x2, gate, up, act))
                });
                let n = y.dims()[1];
                y.reshape([b, t, n])
            }
        };
        self.proj.forward_rows(h, rows)
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
    /// linears called one by one (and the activation of the several-row path), for Llama and
    /// Gemma MLPs, f32 and bf16, with a low-rank term on the gate, whole-batch or per row.
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
                let (a, b) = (
                    mlp.fc_1.forward(x.clone()),
                    mlp.fc_2.as_ref().unwrap().forward(x.clone()),
                );
                let h = match kind {
                    MlpKind::Llama => crate::backend::flex::try_silu_mul(&a, &b).unwrap(),
                    _ => burn::tensor::activation::gelu_approximate(a) * b,
                };
                let two = bits(mlp.proj.forward(h));
                assert_eq!(one, two, "{kind:?} {p:?}");
                let per_row = bits(mlp.forward(x.clone(), Some(&[Some("a0")])));
                assert_eq!(one, per_row, "{kind:?} {p:?}");
                // The term is there: without it the output differs.
                let none = bits(mlp.forward(x, Some(&[None])));
                assert_ne!(one, none, "{kind:?} {p:?}");
            }
        }
    }
}
