//! LayerNorm and RMSNorm over the last dimension, computed as torch does (biased variance).

use burn::prelude::*;

use crate::backend::ModelBackend;
use crate::checkpoint::HostTensor;
use crate::config::NormKind;

/// A normalisation layer.
#[derive(Debug, Clone)]
pub struct Norm<B: ModelBackend> {
    kind: NormKind,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
    /// The base parameters while an adapter's trained norm replaces them: (adapter, weight, bias).
    saved: Option<(String, Tensor<B, 1>, Option<Tensor<B, 1>>)>,
}

impl<B: ModelBackend> Norm<B> {
    /// From a stored weight (and bias, for LayerNorm). A weight that is not 1-D or holds other
    /// than its shape's values, or a bias of another shape, is an
    /// [`Error::InvalidArgument`](crate::error::Error::InvalidArgument).
    pub fn from_host(
        kind: NormKind,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
        eps: f64,
        device: &B::Device,
    ) -> crate::error::Result<Self> {
        let n = weight.data.len();
        for (name, t) in [("weight", Some(weight)), ("bias", bias)] {
            if let Some(t) = t.filter(|t| t.shape != [n] || t.data.len() != n) {
                return Err(crate::error::Error::invalid(
                    name,
                    format!(
                        "expected [{n}], got {:?} with {} values",
                        t.shape,
                        t.data.len()
                    ),
                ));
            }
        }
        let mut w = weight.data.clone();
        if let NormKind::RmsNorm { unit_offset: true } = kind {
            w.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(Self {
            kind,
            weight: Tensor::from_data(TensorData::new(w, [n]), device),
            bias: bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [n]), device)),
            eps,
            saved: None,
        })
    }

    /// Width of the normalised dimension.
    pub fn size(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Whether the layer has a bias (LayerNorm).
    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// Replaces weight (and bias) with an adapter's trained values, keeping the base ones.
    pub fn replace(&mut self, name: &str, weight: &HostTensor, bias: Option<&HostTensor>) {
        let dev = self.weight.device();
        let n = self.size();
        let mut w = weight.data.clone();
        if let NormKind::RmsNorm { unit_offset: true } = self.kind {
            w.iter_mut().for_each(|x| *x += 1.0);
        }
        let new_w = Tensor::from_data(TensorData::new(w, [n]), &dev);
        let new_b = match bias {
            Some(b) => Some(Tensor::from_data(
                TensorData::new(b.data.clone(), [n]),
                &dev,
            )),
            None => self.bias.clone(),
        };
        let old_w = std::mem::replace(&mut self.weight, new_w);
        let old_b = std::mem::replace(&mut self.bias, new_b);
        if self.saved.is_none() {
            self.saved = Some((name.to_string(), old_w, old_b));
        }
    }

    /// Swaps the current parameters with the saved ones (switching an adapter's trained norm on or
    /// off without losing either).
    pub fn swap(&mut self, name: &str) {
        if let Some((n, w, b)) = self.saved.as_mut() {
            if n == name {
                std::mem::swap(&mut self.weight, w);
                std::mem::swap(&mut self.bias, b);
            }
        }
    }

    /// Restores the base parameters if adapter `name` replaced them.
    pub fn restore(&mut self, name: &str) {
        if self.saved.as_ref().is_some_and(|(n, ..)| n == name) {
            if let Some((_, w, b)) = self.saved.take() {
                self.weight = w;
                self.bias = b;
            }
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
