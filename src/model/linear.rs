//! `Linear<B>`: `y = x·Wᵀ + b`, the one seam where adapters will enter the model.
//!
//! The weight is kept as `[in, out]` (the transpose of the checkpoint's `[out, in]`) so the
//! forward pass is a plain matmul on every backend.

use burn::prelude::*;

use crate::checkpoint::HostTensor;

/// A dense linear layer.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    weight: Tensor<B, 2>,
    /// `[out]`.
    bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    /// Builds the layer from a checkpoint weight stored `[out, in]` and an optional bias `[out]`.
    pub fn from_host(weight: &HostTensor, bias: Option<&HostTensor>, device: &B::Device) -> Self {
        let (out, inp) = (weight.shape[0], weight.shape[1]);
        let mut t = vec![0f32; out * inp];
        for o in 0..out {
            let row = &weight.data[o * inp..(o + 1) * inp];
            for (i, &w) in row.iter().enumerate() {
                t[i * out + o] = w;
            }
        }
        let weight = Tensor::from_data(TensorData::new(t, [inp, out]), device);
        let bias = bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [out]), device));
        Self { weight, bias }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// `x`: `[b, t, in]` → `[b, t, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let y = x.reshape([b * t, i]).matmul(self.weight.clone());
        let y = match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze_dim::<2>(0),
            None => y,
        };
        y.reshape([b, t, self.out_features()])
    }
}
