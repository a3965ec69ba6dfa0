//! The burn-flex side of the seam between the model and the host kernels: reading burn-flex
//! tensors in place as slices ([`crate::kernels`] works on slices only) and the fast paths the
//! model takes on burn-flex. On any other backend these find no flex tensor and the model uses
//! burn's own ops.

use burn::prelude::*;

#[cfg(feature = "flex")]
use crate::kernels::weight::Held;

pub(crate) mod attention;
pub(crate) mod linear;

/// The burn-flex tensor behind `t` (a cheap shared clone), if that is the backend.
#[cfg(feature = "flex")]
pub(crate) fn flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<burn_flex::FlexTensor> {
    let p: Box<dyn std::any::Any> = Box::new(t.clone().into_primitive().tensor());
    p.downcast::<burn_flex::FlexTensor>().ok().map(|b| *b)
}

#[cfg(feature = "flex")]
pub(crate) fn held(t: &burn_flex::FlexTensor) -> Option<Held<'_>> {
    use burn::tensor::DType;
    let (start, end) = t.layout().contiguous_offsets()?;
    match t.dtype() {
        DType::F32 => t.storage::<f32>().get(start..end).map(Held::F32),
        DType::BF16 => t.storage::<half::bf16>().get(start..end).map(Held::Bf16),
        DType::F16 => t.storage::<half::f16>().get(start..end).map(Held::F16),
        _ => None,
    }
}

/// Whether backend `B` is burn-flex (its tensors live on the host, its work on rayon's pool).
#[cfg(feature = "flex")]
pub(crate) fn is_flex<B: Backend>() -> bool {
    std::any::TypeId::of::<B::FloatTensorPrimitive>()
        == std::any::TypeId::of::<burn_flex::FlexTensor>()
}

/// Runs `f` on the burn-flex tensor behind `t` itself (not a clone, so a uniquely held one can be
/// written in place with `try_storage_mut`); `None` without running it on another backend.
#[cfg(feature = "flex")]
pub(crate) fn with_flex_mut<B: Backend, const D: usize, R>(
    t: &mut Tensor<B, D>,
    f: impl FnOnce(&mut burn_flex::FlexTensor) -> R,
) -> Option<R> {
    use std::any::Any;
    if !is_flex::<B>() {
        return None;
    }
    let dev = t.device();
    let owned = std::mem::replace(t, Tensor::empty([0; D], &dev));
    let mut boxed: Box<dyn Any> = Box::new(owned.into_primitive().tensor());
    let r = boxed.downcast_mut::<burn_flex::FlexTensor>().map(f);
    match boxed.downcast::<B::FloatTensorPrimitive>() {
        Ok(p) => *t = Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(*p)),
        Err(_) => unreachable!("a box holds the type it was made from"),
    }
    r
}

/// The f32 elements of a contiguous flex tensor, in place.
#[cfg(feature = "flex")]
pub(crate) fn f32s(t: &burn_flex::FlexTensor) -> Option<&[f32]> {
    if t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let (start, end) = t.layout().contiguous_offsets()?;
    t.storage::<f32>().get(start..end)
}

/// Runs `f` on one of rayon's worker threads when `B` is burn-flex and the caller is not one
/// already (else right here). A forward pass starts some two hundred parallel kernels; from a
/// thread outside the pool each of them hands its work over and sleeps until woken (two futex
/// round trips, tens of microseconds on a VM), while a worker runs its share itself and finds
/// the other workers still spinning between kernels.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
pub(crate) fn on_pool<B: Backend, R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    {
        if is_flex::<B>()
            && rayon::current_thread_index().is_none()
            && rayon::current_num_threads() > 1
        {
            return rayon::scope(|_| f());
        }
    }
    f()
}

/// `silu(a)·b` on the host when both live there as f32 (burn-flex), else `None`.
pub fn try_silu_mul<B: Backend, const D: usize>(
    a: &Tensor<B, D>,
    b: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    #[cfg(feature = "flex")]
    {
        use crate::backend::flex::{f32s, flex};
        if a.dims() != b.dims() {
            return None;
        }
        let (at, bt) = (flex(a)?, flex(b)?);
        let (ad, bd) = (f32s(&at)?, f32s(&bt)?);
        let mut y = ad.to_vec();
        crate::kernels::math::silu_mul(&mut y, bd);
        Some(Tensor::from_data(TensorData::new(y, a.dims()), &a.device()))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (a, b);
        None
    }
}

/// Writes `new` (`[1, h, t, hs]`) into `cache` (`[1, h, allocated, hs]`) at positions `pos..pos + t`
/// in place when both are contiguous f32 burn-flex tensors and the cache is held only here: burn-
/// flex's `slice_assign` copies the whole destination first (it clones it to make it contiguous,
/// so the buffer is always shared when written), which made every decoded token copy every
/// layer's cache. `false` (nothing written) otherwise.
pub(crate) fn write_in_place<B: Backend>(
    cache: &mut Tensor<B, 4>,
    new: &Tensor<B, 4>,
    pos: usize,
) -> bool {
    #[cfg(feature = "flex")]
    {
        let [_, h, cap, hs] = cache.dims();
        let t = new.dims()[2];
        let Some(src_t) = flex(new) else { return false };
        let Some(src) = f32s(&src_t).filter(|s| s.len() == h * t * hs) else {
            return false;
        };
        if pos + t > cap || new.dims() != [1, h, t, hs] {
            return false;
        }
        with_flex_mut(cache, |c| {
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
        .unwrap_or(false)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (cache, new, pos);
        false
    }
}
