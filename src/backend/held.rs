//! A weight as a burn tensor holds it: row-major or panels ([`crate::kernels::panels`]),
//! converted both ways, and any held dtype read as f32.

use burn::prelude::*;
use burn::tensor::DType;

use crate::kernels::panels::{from_panels_of, to_panels_of, Layout, WeightShape, PANEL};

/// A held row-major `[k, n]` tensor (f32, bf16 or f16) as panels `[⌈n/16⌉·k, 16]` of the same
/// dtype.
pub(crate) fn panel_tensor<B: Backend>(t: &Tensor<B, 2>) -> Tensor<B, 2> {
    let [k, n] = t.dims();
    let shape = [n.div_ceil(PANEL) * k, PANEL];
    relayout(
        t,
        shape,
        |d| to_panels_of(d, k, n, PANEL),
        |d| to_panels_of(d, k, n, PANEL),
        |d| to_panels_of(d, k, n, PANEL),
    )
}

/// The row-major `[k, n]` tensor of panels made by [`panel_tensor`].
pub(crate) fn rows_tensor<B: Backend>(t: &Tensor<B, 2>, k: usize, n: usize) -> Tensor<B, 2> {
    relayout(
        t,
        [k, n],
        |d| from_panels_of(d, k, n, PANEL),
        |d| from_panels_of(d, k, n, PANEL),
        |d| from_panels_of(d, k, n, PANEL),
    )
}

/// `t`'s values rearranged by the function for its dtype into a tensor of `shape`, same dtype.
fn relayout<B: Backend>(
    t: &Tensor<B, 2>,
    shape: [usize; 2],
    f32s: impl Fn(&[f32]) -> Vec<f32>,
    bf16s: impl Fn(&[half::bf16]) -> Vec<half::bf16>,
    f16s: impl Fn(&[half::f16]) -> Vec<half::f16>,
) -> Tensor<B, 2> {
    use burn::tensor::{DType, TensorCreationOptions};
    let dev = t.device();
    let opts = |dt| TensorCreationOptions::<B>::new(dev.clone()).with_dtype(dt);
    let data = t.to_data();
    match data.dtype {
        DType::BF16 => {
            if let Ok(d) = data.as_slice::<half::bf16>() {
                return Tensor::from_data(TensorData::new(bf16s(d), shape), opts(DType::BF16));
            }
        }
        DType::F16 => {
            if let Ok(d) = data.as_slice::<half::f16>() {
                return Tensor::from_data(TensorData::new(f16s(d), shape), opts(DType::F16));
            }
        }
        DType::F32 => {
            if let Ok(d) = data.as_slice::<f32>() {
                return Tensor::from_data(TensorData::new(f32s(d), shape), &dev);
            }
        }
        _ => {}
    }
    let wide = host_f32(t);
    drop(data);
    Tensor::from_data(TensorData::new(f32s(&wide), shape), &dev)
}

/// `t` as f32 (a cheap clone when it already is).
pub(crate) fn as_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Tensor<B, D> {
    if t.dtype() == DType::F32 {
        t.clone()
    } else {
        let dims = t.dims();
        let v = host_f32(t);
        Tensor::from_data(TensorData::new(v, dims), &t.device())
    }
}

/// The values of `t` as host f32 (widened exactly from 16-bit).
pub(crate) fn host_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    let data = t.clone().into_data();
    match data.dtype {
        DType::BF16 => data
            .as_slice::<half::bf16>()
            .map(|s| s.iter().map(|h| h.to_f32()).collect())
            .unwrap_or_default(),
        DType::F16 => data
            .as_slice::<half::f16>()
            .map(|s| s.iter().map(|h| h.to_f32()).collect())
            .unwrap_or_default(),
        _ => data.convert::<f32>().into_vec::<f32>().unwrap_or_default(),
    }
}

/// A weight held as GGML blocks (`shape.layout` Q8_0 or Q4_0: `shape.n` rows of `shape.k / 32`
/// blocks, as bytes) as the f32 `[k, n]` row-major tensor of its dequantized values (`d·q`,
/// exact in f32); NaN where the held bytes do not make `shape`'s blocks.
pub(crate) fn blocks_rows<B: Backend>(t: &Tensor<B, 2>, shape: WeightShape) -> Tensor<B, 2> {
    use crate::kernels::quant::{dequantize, Block, BlockQ4_0, BlockQ8_0};
    fn values<Bk: Block>(bytes: &[u8], out: &mut [f32]) {
        let blocks: Vec<Bk> = match bytes.len() % std::mem::size_of::<Bk>() {
            0 => bytemuck::pod_collect_to_vec(bytes),
            _ => Vec::new(),
        };
        if blocks.len() * crate::kernels::quant::QK == out.len() {
            dequantize(&blocks, out);
        } else {
            out.fill(f32::NAN);
        }
    }
    let (k, n) = (shape.k, shape.n);
    let data = t.to_data();
    let mut vals = vec![0f32; n * k];
    match shape.layout {
        Layout::Q8_0 => values::<BlockQ8_0>(data.as_bytes(), &mut vals),
        Layout::Q4_0 => values::<BlockQ4_0>(data.as_bytes(), &mut vals),
        Layout::Rows | Layout::Panels => return as_f32(t),
    }
    let rows = crate::kernels::transpose::transpose(&vals, n, k);
    Tensor::from_data(TensorData::new(rows, [k, n]), &t.device())
}

#[cfg(all(test, feature = "flex"))]
mod tests;
