//! The element types weight matrices are held in (f32, bf16, f16) and how the host kernels read
//! them: in place from burn-flex tensors, widened to f32 as they are loaded (exactly: every bf16
//! and f16 value is an f32).

use burn::prelude::*;

/// The burn-flex tensor behind `t` (a cheap shared clone), if that is the backend.
#[cfg(feature = "flex")]
pub(crate) fn flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<burn_flex::FlexTensor> {
    let p: Box<dyn std::any::Any> = Box::new(t.clone().into_primitive().tensor());
    p.downcast::<burn_flex::FlexTensor>().ok().map(|b| *b)
}

/// The elements of a contiguous flex weight, in place: f32, or 16-bit (widened by the kernels).
#[cfg(feature = "flex")]
#[derive(Clone, Copy)]
pub(super) enum Held<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
}

#[cfg(feature = "flex")]
impl Held<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Held::F32(d) => d.len(),
            Held::Bf16(d) => d.len(),
            Held::F16(d) => d.len(),
        }
    }
}

#[cfg(feature = "flex")]
pub(super) fn held(t: &burn_flex::FlexTensor) -> Option<Held<'_>> {
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

/// How many threads the host kernels split their work over (rayon's pool on flex).
pub(super) fn threads() -> usize {
    #[cfg(feature = "flex")]
    {
        rayon::current_num_threads().max(1)
    }
    #[cfg(not(feature = "flex"))]
    {
        1
    }
}

/// An element type weights can be held in: f32, or bf16 / f16 widened exactly as they are read.
pub trait Weight: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Sixteen weights from `p`, widened (AVX-512F).
    ///
    /// # Safety
    /// The CPU has AVX-512F and `p..p + 16` is readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    /// The first `left` (< 16) of sixteen weights from `p`, the rest zero (AVX-512F).
    ///
    /// # Safety
    /// The CPU has AVX-512F, `mask` is `(1 << left) - 1` and `p..p + left` is readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16_part(
        p: *const Self,
        mask: std::arch::x86_64::__mmask16,
        left: usize,
    ) -> std::arch::x86_64::__m512;
    /// Eight weights from `p`, widened (AVX2 + F16C).
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C and `p..p + 8` is readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

#[cfg(not(target_arch = "x86_64"))]
mod portable {
    impl super::Weight for f32 {
        fn to_f32(self) -> f32 {
            self
        }
    }
    impl super::Weight for half::bf16 {
        fn to_f32(self) -> f32 {
            f32::from_bits((self.to_bits() as u32) << 16)
        }
    }
    impl super::Weight for half::f16 {
        fn to_f32(self) -> f32 {
            half::f16::to_f32(self)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Weight;
    use std::arch::x86_64::*;

    impl Weight for f32 {
        #[inline(always)]
        fn to_f32(self) -> f32 {
            self
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16_part(p: *const f32, mask: __mmask16, _left: usize) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }

    /// A 16-bit type's partial load: AVX-512F has no masked 16-bit loads, so the `left` weights
    /// go through a zeroed buffer.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16_copied<W: Weight>(p: *const W, left: usize, zero: W) -> __m512 {
        let mut t = [zero; 16];
        std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), left);
        W::load16(t.as_ptr())
    }

    impl Weight for half::bf16 {
        #[inline(always)]
        fn to_f32(self) -> f32 {
            // bf16 is the upper half of an f32.
            f32::from_bits((self.to_bits() as u32) << 16)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const half::bf16) -> __m512 {
            // `lddqu`, not `loadu`: the latter goes through `copy_nonoverlapping`, whose debug
            // precondition check forces the vector through the stack in dev builds.
            let h = _mm256_lddqu_si256(p as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16_part(p: *const half::bf16, _mask: __mmask16, left: usize) -> __m512 {
            load16_copied(p, left, half::bf16::ZERO)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load8(p: *const half::bf16) -> __m256 {
            let h = _mm_lddqu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }

    impl Weight for half::f16 {
        #[inline(always)]
        fn to_f32(self) -> f32 {
            half::f16::to_f32(self)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const half::f16) -> __m512 {
            _mm512_cvtph_ps(_mm256_lddqu_si256(p as *const __m256i))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16_part(p: *const half::f16, _mask: __mmask16, left: usize) -> __m512 {
            load16_copied(p, left, half::f16::ZERO)
        }
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn load8(p: *const half::f16) -> __m256 {
            _mm256_cvtph_ps(_mm_lddqu_si128(p as *const __m128i))
        }
    }
}
