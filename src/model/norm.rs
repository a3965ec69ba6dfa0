//! LayerNorm and RMSNorm over the last dimension, computed as torch does (biased variance).

use burn::prelude::*;

use crate::checkpoint::HostTensor;
use crate::config::NormKind;

/// A normalisation layer.
#[derive(Debug, Clone)]
pub struct Norm<B: Backend> {
    kind: NormKind,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> Norm<B> {
    /// From a stored weight (and bias, for LayerNorm).
    pub fn from_host(
        kind: NormKind,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        let n = weight.data.len();
        let mut w = weight.data.clone();
        if let NormKind::RmsNorm { unit_offset: true } = kind {
            w.iter_mut().for_each(|x| *x += 1.0);
        }
        Self {
            kind,
            weight: Tensor::from_data(TensorData::new(w, [n]), device),
            bias: bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [n]), device)),
            eps,
        }
    }

    /// `x`: `[b, t, n]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let w = self.weight.clone().unsqueeze_dims::<3>(&[0, 1]);
        match self.kind {
            NormKind::LayerNorm => {
                let mean = x.clone().mean_dim(2);
                let centered = x - mean;
                let var = centered.clone().powi_scalar(2).mean_dim(2);
                let y = centered / (var + self.eps).sqrt() * w;
                match &self.bias {
                    Some(b) => y + b.clone().unsqueeze_dims::<3>(&[0, 1]),
                    None => y,
                }
            }
            NormKind::RmsNorm { .. } => {
                let ms = x.clone().powi_scalar(2).mean_dim(2);
                x / (ms + self.eps).sqrt() * w
            }
        }
    }
}
