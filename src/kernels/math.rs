//! Element-wise math for the host kernels: an `exp` written so the compiler vectorises it, the
//! gated activation `silu(a)·b` in one parallel pass (burn-flex runs `silu` as one scalar `expf`
//! per element on one thread, then a separate multiply), the rotary embedding of one head, and
//! which vector instruction sets the CPU offers.
//!
//! Everything here is plain element-by-element arithmetic with no reassociation, so the vector
//! width the compiler picks (AVX-512 where the CPU has it, SSE2 otherwise) never changes a result.

/// `eˣ` to about one ulp (Cephes' `expf` polynomial), in operations that vectorise: no libm call,
/// rounding to the nearest integer by the add-and-subtract trick. Inputs are clamped to
/// `[-87.3, 88]` (results stay normal f32: `exp(-100)` gives `1.2e-38` instead of a denormal);
/// NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Comparisons, not `max`/`min`, so that NaN stays NaN.
    let x = if x < -87.336_55 { -87.336_55 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * (r * r) + r + 1.0;
    // `n` is in [-126, 127]: the exponent field of 2ⁿ.
    let e = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((e.wrapping_add(127) as u32) << 23)
}

/// Runs `body` compiled for AVX-512 when the CPU has it, else for AVX2 + FMA, else for the
/// baseline target: the compiler vectorises its plain loops 16, 8 or 4 wide. Same results
/// either way (element-wise arithmetic, `mul_add` exactly rounded on every path).
#[inline(always)]
pub fn vectorised<R>(body: impl FnOnce() -> R) -> R {
    // Callers mark `body` `#[inline(always)]`: inlined into `avx512` / `avx2`, its loops are
    // compiled for those features there.
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if self::avx512() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(body) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(body) };
        }
    }
    body()
}

/// Whether graftlm's AVX-512 kernels may run: the CPU has AVX-512F and the environment
/// variable `GRAFTLM_NO_AVX512` is unset (read once). Set, this machine takes the AVX2 and
/// portable paths a CPU without AVX-512 takes — for measuring and testing them here.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("GRAFTLM_NO_AVX512").is_none()
    })
}

/// Whether graftlm's AVX2 kernels may run: the CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// `a ← silu(a)·b = a / (1 + e⁻ᵃ) · b`, element by element.
pub fn silu_mul(a: &mut [f32], b: &[f32]) {
    const CHUNK: usize = 8192;
    let run = |(a, b): (&mut [f32], &[f32])| {
        vectorised(
            #[inline(always)]
            || {
                for (x, &y) in a.iter_mut().zip(b) {
                    *x = *x / (1.0 + exp(-*x)) * y;
                }
            },
        )
    };
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if a.len() > CHUNK {
            a.par_chunks_mut(CHUNK)
                .zip(b.par_chunks(CHUNK))
                .for_each(run);
            return;
        }
    }
    run((a, b));
}

/// The most rotary dimensions [`rotate`] handles (a stack buffer).
pub(crate) const MAX_ROTARY: usize = 512;

/// Rotates the first `cos.len()` (≤ [`MAX_ROTARY`], even) elements of one head's `row` by one
/// position's tables, with the burn-op path's arithmetic (a product each, then their sum).
pub(crate) fn rotate(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    let n = cos.len();
    let half = n / 2;
    let mut rot = [0f32; MAX_ROTARY];
    rot[..n].copy_from_slice(&row[..n]);
    for d in 0..half {
        row[d] = rot[d] * cos[d] + (-rot[d + half]) * sin[d];
        row[d + half] = rot[d + half] * cos[d + half] + rot[d] * sin[d + half];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0u32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), (x as f64).exp() as f32);
            worst = worst.max(got.to_bits().abs_diff(want.to_bits()));
            x += 0.0137;
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.2e-38);
        assert!(exp(1000.0).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_mul_matches_its_definition_in_any_chunking() {
        let n = 20_000;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 - 10_000.0) / 500.0).collect();
        let b: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut y = a.clone();
        silu_mul(&mut y, &b);
        for i in 0..n {
            let x = a[i] as f64;
            let want = x / (1.0 + (-x).exp()) * b[i] as f64;
            assert!(
                (y[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{i}"
            );
            // The parallel split does not change a value.
            let mut one = [a[i]];
            silu_mul(&mut one, &b[i..i + 1]);
            assert_eq!(one[0].to_bits(), y[i].to_bits());
        }
    }
}
#[cfg(test)]
mod speed {
    #[test]
    #[ignore]
    fn silu_speed() {
        let n = 128 * 1536;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 - 10_000.0) / 5000.0).collect();
        let b = a.clone();
        let mut y = a.clone();
        let t = std::time::Instant::now();
        for _ in 0..100 {
            y.copy_from_slice(&a);
            super::silu_mul(&mut y, &b);
        }
        println!(
            "silu_mul {:.3} ns/elt",
            t.elapsed().as_secs_f64() / 100.0 / n as f64 * 1e9
        );
    }
}
