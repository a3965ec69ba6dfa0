//! The element types weight matrices are held in (f32, bf16, f16) and how the host kernels read
//! them: borrowed as held, widened to f32 as they are loaded (exactly: every bf16 and f16 value
//! is an f32).

/// The elements of a weight as held, borrowed: f32, 16-bit (widened by the kernels), or GGML
/// blocks of a weight held `[n, k / 32]` ([`crate::kernels::panels::Layout::Q8_0`] /
/// [`Q4_0`](crate::kernels::panels::Layout::Q4_0); only a linear's own weight is held so).
#[derive(Clone, Copy)]
pub enum Held<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
    Q8_0(&'a [crate::kernels::quant::BlockQ8_0]),
    Q4_0(&'a [crate::kernels::quant::BlockQ4_0]),
}

impl Held<'_> {
    /// Elements (values, or blocks).
    pub(crate) fn len(&self) -> usize {
        match self {
            Held::F32(d) => d.len(),
            Held::Bf16(d) => d.len(),
            Held::F16(d) => d.len(),
            Held::Q8_0(d) => d.len(),
            Held::Q4_0(d) => d.len(),
        }
    }

    /// Whether it is held as blocks.
    pub(crate) fn is_blocks(&self) -> bool {
        matches!(self, Held::Q8_0(_) | Held::Q4_0(_))
    }
}

/// How many threads the host kernels split their work over (rayon's pool on flex).
pub(crate) fn threads() -> usize {
    #[cfg(feature = "flex")]
    {
        rayon::current_num_threads().max(1)
    }
    #[cfg(not(feature = "flex"))]
    {
        1
    }
}

pub(crate) fn f16_slice(src: &[f32], dst: &mut [half::f16]) {
    half::slice::HalfFloatSliceExt::convert_from_f32_slice(dst, src);
}

/// Round-to-nearest-even f32 → bf16 of finite values (weights are checked finite at load; a
/// value past bf16's range becomes infinite, as with `half::bf16::from_f32`). Branch-free, so it
/// vectorises.
pub(crate) fn bf16_slice(src: &[f32], dst: &mut [half::bf16]) {
    dst.iter_mut().zip(src).for_each(|(o, &x)| *o = bf16_rne(x));
}

#[inline(always)]
pub(crate) fn bf16_rne(x: f32) -> half::bf16 {
    let b = x.to_bits();
    half::bf16::from_bits((b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16)
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
