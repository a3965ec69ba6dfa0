//! A linear's weight as a burn tensor in its layout: row-major or panels
//! ([`crate::kernels::panels`]), converted both ways, and columns gathered from either.

use burn::prelude::*;

use crate::kernels::panels::{from_panels_of, to_panels_of, WeightShape, PANEL};
#[cfg(feature = "flex")]
use crate::kernels::weight::Held;
use crate::kernels::weight::Weight;

/// Whether this process holds `B`'s linear weights as panels: burn-flex (the host kernels read
/// them) on a CPU with AVX-512F or AVX2 + FMA + F16C (the panel kernels' forms; elsewhere the
/// portable row-major loops are faster).
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
pub(crate) fn hold_panels<B: Backend>() -> bool {
    #[cfg(all(feature = "flex", target_arch = "x86_64"))]
    {
        crate::backend::flex::is_flex::<B>()
            && (crate::kernels::math::avx512() || crate::kernels::math::avx2())
    }
    #[cfg(not(all(feature = "flex", target_arch = "x86_64")))]
    false
}

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
    let wide = crate::model::precision::host_f32(t);
    drop(data);
    Tensor::from_data(TensorData::new(f32s(&wide), shape), &dev)
}

/// Columns `ids` of a `[k, n]` weight held in `t` as `shape` says, as f32 rows `[ids.len(), k]`
/// (the embedding lookup of a model whose head serves as its embedding).
pub(crate) fn columns_of<B: Backend>(
    t: &Tensor<B, 2>,
    shape: WeightShape,
    ids: &[u32],
) -> Tensor<B, 2> {
    fn gather<W: Weight>(w: &[W], shape: WeightShape, ids: &[u32], out: &mut [f32]) {
        for (&j, row) in ids.iter().zip(out.chunks_mut(shape.k)) {
            for (i, o) in row.iter_mut().enumerate() {
                *o = w[shape.at(i, j as usize)].to_f32();
            }
        }
    }
    let k = shape.k;
    if k == 0 {
        return Tensor::from_data(
            TensorData::new(Vec::<f32>::new(), [ids.len(), 0]),
            &t.device(),
        );
    }
    let mut out = vec![0f32; ids.len() * k];
    #[cfg_attr(not(feature = "flex"), allow(unused_mut))]
    let mut done = false;
    #[cfg(feature = "flex")]
    if let Some(ft) = crate::backend::flex::flex(t) {
        if let Some(h) = crate::backend::flex::held(&ft).filter(|h| h.len() == shape.len()) {
            match h {
                Held::F32(w) => gather(w, shape, ids, &mut out),
                Held::Bf16(w) => gather(w, shape, ids, &mut out),
                Held::F16(w) => gather(w, shape, ids, &mut out),
            }
            done = true;
        }
    }
    if !done {
        gather(&crate::model::precision::host_f32(t), shape, ids, &mut out);
    }
    Tensor::from_data(TensorData::new(out, [ids.len(), k]), &t.device())
}

#[cfg(all(test, feature = "flex"))]
mod tests;
