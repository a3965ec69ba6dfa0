//! [`ModelOps`] on burn-flex: its tensors live on the host, so the operations read them in place
//! as slices and run the host kernels ([`crate::kernels`]); whatever a kernel does not serve (a
//! dtype, a layout, a shape) goes to the burn-op default ([`super::reference`]).

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::FlexTensor;

use super::ops::{AttentionSpec, Gate, Heads, LinearOp, ModelOps, RopeTables};
use super::{reference, Flex};
use crate::kernels::panels::{Layout, WeightShape};
use crate::kernels::weight::Held;

pub(crate) mod attention;
pub(crate) mod linear;
pub(crate) mod merge;

impl ModelOps for Flex {
    fn holds_panels() -> bool {
        // The panel kernels' forms; elsewhere the portable row-major loops are faster.
        #[cfg(target_arch = "x86_64")]
        {
            crate::kernels::math::avx512() || crate::kernels::math::avx2()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    fn holds_16bit() -> bool {
        true
    }

    fn read_held<R>(
        t: &Tensor<Self, 2>,
        layout: Layout,
        f: impl FnOnce(Held<'_>) -> R,
    ) -> Option<R> {
        let p = prim(t);
        held(&p, layout).map(f)
    }

    fn hold_blocks(
        bytes: Vec<u8>,
        shape: [usize; 2],
        layout: Layout,
        _device: &Self::Device,
    ) -> Option<Tensor<Self, 2>> {
        use burn::tensor::DType;
        let data = TensorData::from_bytes_vec(bytes, shape, DType::U8);
        let t = FlexTensor::from_data(data);
        // The kernels read the bytes as blocks (alignment 2): only storage that allows it.
        held(&t, layout)?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(t)))
    }

    /// On one of rayon's workers when the caller is not one already: a forward pass starts some
    /// two hundred parallel kernels; from a thread outside the pool each of them hands its work
    /// over and sleeps until woken (two futex round trips), while a worker runs its share itself
    /// and finds the other workers still spinning between kernels.
    fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        if rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
            return rayon::scope(|_| f());
        }
        f()
    }

    fn each<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    }

    fn linear_layer(x: Tensor<Self, 2>, op: &LinearOp<'_, Self>) -> Tensor<Self, 2> {
        linear::linear(x, op)
    }

    fn gated(
        x: Tensor<Self, 2>,
        gate: &LinearOp<'_, Self>,
        up: &LinearOp<'_, Self>,
        act: Gate,
    ) -> Tensor<Self, 2> {
        linear::gated(x, gate, up, act)
    }

    fn rope(x: Tensor<Self, 4>, tables: &RopeTables<Self>, start: usize) -> Tensor<Self, 4> {
        attention::rope(&x, tables, start).unwrap_or_else(|| reference::rope(x, tables, start))
    }

    fn causal_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        spec: AttentionSpec,
    ) -> Tensor<Self, 4> {
        attention::try_attention(&q, &k, &v, spec)
            .unwrap_or_else(|| reference::attention(q, k, v, spec))
    }

    fn attend_qkv(
        qkv: Tensor<Self, 3>,
        heads: Heads,
        rope: &RopeTables<Self>,
        pos: usize,
        append: impl FnOnce(Tensor<Self, 4>, Tensor<Self, 4>) -> (Tensor<Self, 4>, Tensor<Self, 4>),
    ) -> Tensor<Self, 3> {
        attention::attend_qkv(qkv, heads, rope, pos, append)
    }

    fn write_cache(cache: &mut Tensor<Self, 4>, new: Tensor<Self, 4>, pos: usize) {
        if !write_in_place(cache, &new, pos) {
            reference::write_cache(cache, new, pos);
        }
    }

    fn fold_low_rank(
        w: &mut Tensor<Self, 2>,
        shape: WeightShape,
        a: &Tensor<Self, 2>,
        b: &Tensor<Self, 2>,
        scale: f32,
        subtract: bool,
    ) -> bool {
        merge::add_low_rank(w, shape, a, b, scale, subtract)
    }

    fn merged_16(
        base: &Tensor<Self, 2>,
        shape: WeightShape,
        terms: &[(&Tensor<Self, 2>, &Tensor<Self, 2>, f32)],
        narrow: bool,
    ) -> Option<Tensor<Self, 2>> {
        merge::merged_16(base, shape, terms, narrow)
    }
}

/// The burn-flex tensor behind `t` (a cheap shared clone).
pub(crate) fn prim<const D: usize>(t: &Tensor<Flex, D>) -> FlexTensor {
    t.clone().into_primitive().tensor()
}

/// Runs `f` on the burn-flex tensor behind `t` itself (not a clone, so a uniquely held one can be
/// written in place with `try_storage_mut`).
pub(crate) fn with_prim_mut<const D: usize, R>(
    t: &mut Tensor<Flex, D>,
    f: impl FnOnce(&mut FlexTensor) -> R,
) -> R {
    let dev = t.device();
    let owned = std::mem::replace(t, Tensor::empty([0; D], &dev));
    let mut p = owned.into_primitive().tensor();
    let r = f(&mut p);
    *t = Tensor::from_primitive(TensorPrimitive::Float(p));
    r
}

/// The elements of a contiguous flex tensor held as f32, bf16 or f16, or as the bytes of
/// GGML blocks (`layout` says which), in place.
pub(crate) fn held(t: &FlexTensor, layout: Layout) -> Option<Held<'_>> {
    use burn::tensor::DType;
    let (start, end) = t.layout().contiguous_offsets()?;
    match (t.dtype(), layout) {
        (DType::F32, _) => t.storage::<f32>().get(start..end).map(Held::F32),
        (DType::BF16, _) => t.storage::<half::bf16>().get(start..end).map(Held::Bf16),
        (DType::F16, _) => t.storage::<half::f16>().get(start..end).map(Held::F16),
        (DType::U8, Layout::Q8_0) => bytemuck::try_cast_slice(t.storage::<u8>().get(start..end)?)
            .ok()
            .map(Held::Q8_0),
        (DType::U8, Layout::Q4_0) => bytemuck::try_cast_slice(t.storage::<u8>().get(start..end)?)
            .ok()
            .map(Held::Q4_0),
        _ => None,
    }
}

/// The f32 elements of a contiguous flex tensor, in place.
pub(crate) fn f32s(t: &FlexTensor) -> Option<&[f32]> {
    if t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let (start, end) = t.layout().contiguous_offsets()?;
    t.storage::<f32>().get(start..end)
}

/// `silu(a)·b` on the host when both are contiguous f32, else `None`.
pub(crate) fn try_silu_mul<const D: usize>(
    a: &Tensor<Flex, D>,
    b: &Tensor<Flex, D>,
) -> Option<Tensor<Flex, D>> {
    if a.dims() != b.dims() {
        return None;
    }
    let (at, bt) = (prim(a), prim(b));
    let (ad, bd) = (f32s(&at)?, f32s(&bt)?);
    let mut y = ad.to_vec();
    crate::kernels::math::silu_mul(&mut y, bd);
    Some(Tensor::from_data(TensorData::new(y, a.dims()), &a.device()))
}

/// Writes `new` (`[1, h, t, hs]`) into `cache` (`[1, h, allocated, hs]`) at positions
/// `pos..pos + t` in place when both are contiguous f32 and the cache is held only here:
/// burn-flex's `slice_assign` copies the whole destination first (it clones it to make it
/// contiguous, so the buffer is always shared when written), which would copy every layer's
/// cache for every decoded token. `false` (nothing written) otherwise.
fn write_in_place(cache: &mut Tensor<Flex, 4>, new: &Tensor<Flex, 4>, pos: usize) -> bool {
    let [_, h, cap, hs] = cache.dims();
    let t = new.dims()[2];
    let src_t = prim(new);
    let Some(src) = f32s(&src_t).filter(|s| s.len() == h * t * hs) else {
        return false;
    };
    if pos + t > cap || new.dims() != [1, h, t, hs] {
        return false;
    }
    with_prim_mut(cache, |c| {
        if c.dtype() != burn::tensor::DType::F32
            || c.layout().contiguous_offsets() != Some((0, h * cap * hs))
        {
            return false;
        }
        let Some(dst) = c.try_storage_mut::<f32>() else {
            return false;
        };
        if dst.len() != h * cap * hs {
            return false;
        }
        for g in 0..h {
            dst[(g * cap + pos) * hs..][..t * hs].copy_from_slice(&src[g * t * hs..][..t * hs]);
        }
        true
    })
}
