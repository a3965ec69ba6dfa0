//! f32 activations times rows of quantized blocks: `y[r] = Σ_b d_b · Σ_j q_bj · x_bj`, the
//! decode matrix–vector product over a Q8_0 / Q4_0 weight held `[out, in/32]` blocks.
//!
//! The activations stay f32 (llama.cpp rounds them to 8 bits first): the result is then the
//! product with the dequantized weights up to summation order, the numbers a backend without
//! these kernels computes from the same blocks. Every form sums in one order — sixteen lanes,
//! lane `l` taking weights `l` and `l + 16` of each block (`t = q_l·x_l`, then
//! `t = q_{l+16}·x_{l+16} + t` fused, then `acc_l = d·t + acc_l` fused), lanes folded in halves
//! at the end — so AVX-512, AVX2 and the portable loop give the same bits.

use super::{BlockQ4_0, BlockQ8_0, QK};

/// Lanes of the canonical sum.
const LANES: usize = 16;

/// How far ahead of the block it multiplies a row's kernel asks for memory, in bytes: the
/// rows of a task lie one after another, so this runs ahead through the following rows. A
/// short distance leaves the kernel waiting on DRAM (measurements: benches/RESULTS.md).
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 8192;

/// A block type the dot kernels read.
pub trait DotBlock: super::Block {
    /// The codes of weights `l` and `l + 16` of the block, `l` < 16, as exact f32 (`q`, not
    /// `d·q`).
    fn pair(&self, l: usize) -> (f32, f32);
    /// The codes of weights 0..16 and 16..32.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn codes16(&self) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512);
    /// The codes of weights 0..8, 8..16, 16..24 and 24..32.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn codes8(&self) -> [std::arch::x86_64::__m256; 4];
    /// The scale's f16 bits (read by F16C in the SIMD forms).
    fn scale_bits(&self) -> u16;
}

impl DotBlock for BlockQ8_0 {
    fn pair(&self, l: usize) -> (f32, f32) {
        (self.qs[l] as f32, self.qs[l + LANES] as f32)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn codes16(&self) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        let p = self.qs.as_ptr() as *const __m128i;
        let c = |v| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
        (c(_mm_loadu_si128(p)), c(_mm_loadu_si128(p.add(1))))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn codes8(&self) -> [std::arch::x86_64::__m256; 4] {
        use std::arch::x86_64::*;
        let p = self.qs.as_ptr();
        let c = |i: usize| {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                p.add(i) as *const __m128i
            )))
        };
        [c(0), c(8), c(16), c(24)]
    }

    fn scale_bits(&self) -> u16 {
        self.d.to_bits()
    }
}

impl DotBlock for BlockQ4_0 {
    fn pair(&self, l: usize) -> (f32, f32) {
        let b = self.qs[l];
        (((b & 0x0f) as i32 - 8) as f32, ((b >> 4) as i32 - 8) as f32)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn codes16(&self) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        let (lo, hi) = nibbles(self);
        let c = |v| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
        (c(lo), c(hi))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn codes8(&self) -> [std::arch::x86_64::__m256; 4] {
        use std::arch::x86_64::*;
        let (lo, hi) = nibbles(self);
        let c = |v| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        [
            c(lo),
            c(_mm_srli_si128(lo, 8)),
            c(hi),
            c(_mm_srli_si128(hi, 8)),
        ]
    }

    fn scale_bits(&self) -> u16 {
        self.d.to_bits()
    }
}

/// A Q4_0 block's codes minus 8 as signed bytes: weights 0..16 (low nibbles), 16..32 (high).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "sse2")]
unsafe fn nibbles(b: &BlockQ4_0) -> (std::arch::x86_64::__m128i, std::arch::x86_64::__m128i) {
    use std::arch::x86_64::*;
    let (mask, eight) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(8));
    let v = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
    let lo = _mm_sub_epi8(_mm_and_si128(v, mask), eight);
    let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), mask), eight);
    (lo, hi)
}

/// `R` rows at once on AVX-512 (independent chains hide the latency of each row's own),
/// every row summed exactly as alone.
///
/// # Safety
/// The CPU has AVX-512F and F16C; every row has `rows[0].len()` blocks and `x` covers them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn rows_avx512<B: DotBlock, const R: usize>(rows: [&[B]; R], x: &[f32]) -> [f32; R] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..rows[0].len() {
        let xp = x.as_ptr().add(b * QK);
        let (x0, x1) = (_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(LANES)));
        for (a, row) in acc.iter_mut().zip(&rows) {
            let blk = row.get_unchecked(b);
            // (A prefetch of an address past the weight is harmless.)
            _mm_prefetch(
                (row.as_ptr().wrapping_add(b) as *const i8).wrapping_add(PREFETCH_BYTES),
                _MM_HINT_T0,
            );
            let (q0, q1) = blk.codes16();
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(blk.scale_bits() as i32)));
            let t = _mm512_mul_ps(q0, x0);
            let t = _mm512_fmadd_ps(q1, x1, t);
            *a = _mm512_fmadd_ps(_mm512_set1_ps(d), t, *a);
        }
    }
    acc.map(|a| {
        let mut lanes = [0f32; LANES];
        _mm512_storeu_ps(lanes.as_mut_ptr(), a);
        fold(lanes)
    })
}

/// [`rows_avx512`] for AVX2: lanes 0..8 take weights 0..8 and 16..24, lanes 8..16 take 8..16
/// and 24..32 — the sixteen lanes of the other forms in two registers.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; every row has `rows[0].len()` blocks and `x` covers them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<B: DotBlock, const R: usize>(rows: [&[B]; R], x: &[f32]) -> [f32; R] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..rows[0].len() {
        let xp = x.as_ptr().add(b * QK);
        let xs = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(xp.add(i)));
        for (a, row) in acc.iter_mut().zip(&rows) {
            let blk = row.get_unchecked(b);
            _mm_prefetch(
                (row.as_ptr().wrapping_add(b) as *const i8).wrapping_add(PREFETCH_BYTES),
                _MM_HINT_T0,
            );
            let c = blk.codes8();
            let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                blk.scale_bits() as i32,
            ))));
            let t = _mm256_mul_ps(c[0], xs[0]);
            let t = _mm256_fmadd_ps(c[2], xs[2], t);
            a[0] = _mm256_fmadd_ps(d, t, a[0]);
            let t = _mm256_mul_ps(c[1], xs[1]);
            let t = _mm256_fmadd_ps(c[3], xs[3], t);
            a[1] = _mm256_fmadd_ps(d, t, a[1]);
        }
    }
    acc.map(|[lo, hi]| {
        let mut lanes = [0f32; LANES];
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
        fold(lanes)
    })
}

/// The sixteen lane sums folded in halves (8, 4, 2, 1): the one order every form ends with.
#[inline(always)]
fn fold(mut lanes: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
        w /= 2;
    }
    lanes[0]
}

/// `Σ_j w_j · x_j` over one row of blocks, in the canonical order, portable.
pub(crate) fn row_dot_portable<B: DotBlock>(row: &[B], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (blk, x) in row.iter().zip(x.chunks_exact(QK)) {
        let d = blk.scale();
        for (l, a) in acc.iter_mut().enumerate() {
            let (q0, q1) = blk.pair(l);
            let t = q0 * x[l];
            let t = q1.mul_add(x[l + LANES], t);
            *a = d.mul_add(t, *a);
        }
    }
    fold(acc)
}

/// Which form the dot runs: decided once per call.
#[derive(Clone, Copy)]
enum Form {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

fn form() -> Form {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::math::avx512() {
            return Form::Avx512;
        }
        if crate::kernels::math::avx2() {
            return Form::Avx2;
        }
    }
    Form::Portable
}

/// `Σ_j w_j · x_j` over one row of blocks (`x` holds `QK · row.len()` values).
///
/// # Panics
/// When `x` is shorter than the row.
#[cfg(test)]
pub fn row_dot<B: DotBlock>(row: &[B], x: &[f32]) -> f32 {
    row_dot_as(form(), row, x)
}

/// `y[r] = Σ_j w_rj · x_j` for the `y.len()` rows of `k` blocks in `w`, on the calling thread.
///
/// # Panics
/// When `w` or `x` is too short.
pub(crate) fn rows_with<B: DotBlock>(w: &[B], k: usize, x: &[f32], y: &mut [f32]) {
    rows_as(form(), w, k, x, y)
}

#[cfg(test)]
fn row_dot_as<B: DotBlock>(form: Form, row: &[B], x: &[f32]) -> f32 {
    let mut y = [0f32];
    rows_as(form, row, row.len(), x, &mut y);
    y[0]
}

/// `y[r] = Σ_j w_rj · x_j` for the `y.len()` rows of `k` blocks in `w`, in groups of rows that
/// share each load of `x`.
fn rows_as<B: DotBlock>(form: Form, w: &[B], k: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() >= k * QK && w.len() >= k * y.len(),
        "{} activations, {} blocks for {} rows of {k}",
        x.len(),
        w.len(),
        y.len()
    );
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let row = |r: usize| &w[r * k..(r + 1) * k];
    match form {
        // SAFETY (both arms): the CPU has the features (`form`); every row has `k` blocks and
        // `x` covers them (asserted above).
        #[cfg(target_arch = "x86_64")]
        Form::Avx512 => {
            let mut r = 0;
            while r + 4 <= y.len() {
                let out = unsafe { rows_avx512([row(r), row(r + 1), row(r + 2), row(r + 3)], x) };
                y[r..r + 4].copy_from_slice(&out);
                r += 4;
            }
            for (r, o) in y.iter_mut().enumerate().skip(r) {
                *o = unsafe { rows_avx512([row(r)], x) }[0];
            }
        }
        #[cfg(target_arch = "x86_64")]
        Form::Avx2 => {
            let mut r = 0;
            while r + 2 <= y.len() {
                let out = unsafe { rows_avx2([row(r), row(r + 1)], x) };
                y[r..r + 2].copy_from_slice(&out);
                r += 2;
            }
            for (r, o) in y.iter_mut().enumerate().skip(r) {
                *o = unsafe { rows_avx2([row(r)], x) }[0];
            }
        }
        Form::Portable => {
            for (r, o) in y.iter_mut().enumerate() {
                *o = row_dot_portable(row(r), x);
            }
        }
    }
}

/// `y = W·x` for `W` held as `y.len()` rows of `x.len() / QK` blocks, rows split across
/// rayon's threads (the result does not depend on how).
///
/// # Panics
/// When `x.len()` is not a whole number of blocks or `w` is not `y.len()` rows of them.
pub fn matvec<B: DotBlock>(x: &[f32], w: &[B], y: &mut [f32]) {
    use rayon::prelude::*;
    assert_eq!(x.len() % QK, 0, "{} activations: not whole blocks", x.len());
    let k = x.len() / QK;
    assert_eq!(
        w.len(),
        k * y.len(),
        "{} blocks for {} rows of {k}",
        w.len(),
        y.len()
    );
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let form = form();
    let threads = crate::kernels::weight::threads();
    // A few tasks per thread, each a run of whole rows (a multiple of the widest group).
    let rows = (y.len().div_ceil(threads * 4).div_ceil(4) * 4).max(8);
    y.par_chunks_mut(rows)
        .zip(w.par_chunks((rows * k).max(1)))
        .for_each(|(y, w)| rows_as(form, w, k, x, y));
}

/// One form of each block type's row dot (tests compare them).
#[cfg(test)]
pub(super) type Forms = (
    &'static str,
    fn(&[BlockQ8_0], &[f32]) -> f32,
    fn(&[BlockQ4_0], &[f32]) -> f32,
);

/// Every form this CPU can run.
#[cfg(test)]
pub(super) fn forms() -> Vec<Forms> {
    let mut v: Vec<Forms> = vec![("portable", row_dot_portable, row_dot_portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::math::avx512() {
            v.push((
                "avx512",
                |r, x| row_dot_as(Form::Avx512, r, x),
                |r, x| row_dot_as(Form::Avx512, r, x),
            ));
        }
        if crate::kernels::math::avx2() {
            v.push((
                "avx2",
                |r, x| row_dot_as(Form::Avx2, r, x),
                |r, x| row_dot_as(Form::Avx2, r, x),
            ));
        }
    }
    v
}
