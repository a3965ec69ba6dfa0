//! The ≥ 8-query attention blocks: eight rows × sixteen lanes of `Σᵢ a[i][r] · b[i·stride + l]`,
//! one fused multiply-add chain per output (AVX-512, AVX2 + FMA, or plain code: the same bits).

/// `acc[r][l] = Σᵢ a[i][r] · b[i · stride + l]` for eight rows × sixteen lanes: one fused
/// multiply-add chain per output in `i` order (AVX-512 registers when the CPU has them, the same
/// arithmetic in plain code otherwise).
#[inline(always)]
pub(crate) fn block8(a: &[[f32; 8]], b: &[f32], stride: usize) -> [[f32; 16]; 8] {
    let mut acc = [[0f32; 16]; 8];
    if a.is_empty() {
        return acc;
    }
    assert!((a.len() - 1) * stride + 16 <= b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if crate::kernels::math::avx512() {
            // SAFETY: AVX-512F is present; the assert keeps every row `b[i·stride..][..16]` in
            // bounds.
            unsafe { block8_avx512(a, b.as_ptr(), stride, &mut acc) };
            return acc;
        }
        if crate::kernels::math::avx2() {
            // SAFETY: AVX2 and FMA are present; the assert keeps every row in bounds.
            unsafe { block8_avx2(a, b.as_ptr(), stride, &mut acc) };
            return acc;
        }
    }
    block8_plain(a, b, stride, &mut acc);
    acc
}

#[inline(always)]
pub(crate) fn block8_plain(a: &[[f32; 8]], b: &[f32], stride: usize, acc: &mut [[f32; 16]; 8]) {
    for (ai, row) in a.iter().zip(b.chunks(stride)) {
        let row: &[f32; 16] = row[..16].try_into().unwrap();
        for (acc_r, &x) in acc.iter_mut().zip(ai) {
            for l in 0..16 {
                acc_r[l] = x.mul_add(row[l], acc_r[l]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block8_avx512(a: &[[f32; 8]], b: *const f32, stride: usize, out: &mut [[f32; 16]; 8]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 8];
    let mut bp = b;
    for ai in a {
        let row = _mm512_loadu_ps(bp);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            *acc_r = _mm512_fmadd_ps(_mm512_set1_ps(ai[r]), row, *acc_r);
        }
        bp = bp.wrapping_add(stride);
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// [`block8_avx512`] with AVX2: eight lanes at a time (eight accumulators; sixteen would fill
/// every register), the second half of each row read again from L1. Without it the AVX2 path
/// would run the plain loops with the accumulators in memory, a large share of a prefill
/// (measurements: benches/RESULTS.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block8_avx2(a: &[[f32; 8]], b: *const f32, stride: usize, out: &mut [[f32; 16]; 8]) {
    use std::arch::x86_64::*;
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut bp = b.add(8 * half);
        for ai in a {
            let row = _mm256_loadu_ps(bp);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                *acc_r = _mm256_fmadd_ps(_mm256_set1_ps(ai[r]), row, *acc_r);
            }
            bp = bp.wrapping_add(stride);
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr().add(8 * half), a);
        }
    }
}
