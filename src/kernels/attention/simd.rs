//! AVX-512 register kernels for the few-query (decoding) path of [`crate::kernels::attention`]:
//! the same arithmetic as its plain loops, bit for bit (tested against them), without their
//! costs. The plain score loop sums each key's sixteen lanes one by one (fifteen dependent
//! scalar adds and as many shuffles per key and head); here sixteen keys' lane vectors are
//! transposed and added as vectors, in the same lane order. The plain `p·v` loop loads and
//! stores the output row for every key; here up to four heads × sixty-four dimensions stay in
//! registers across the keys (sixteen vectors), added in the same key order; CPUs with AVX2
//! but not AVX-512 get a `p·v` kernel too (four heads × sixteen dimensions).
//!
//! Callers check [`available`] (scores) or [`values_available`] (`p·v`) and that the head size
//! is a multiple of sixteen.

/// Whether [`weighted_values`] can run here (x86-64 with AVX-512F, or AVX2 + FMA + F16C).
pub(crate) fn values_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::math::avx512() || crate::kernels::math::avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`scores`] can run here (x86-64 with AVX-512F).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::math::avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `sc[i] = dot(q, key a + i)` for the largest multiple of sixteen keys of `a..b` (returned),
/// key `j` at `kd[j · stride..][..q.len()]`; `dot` as in the plain loop: an FMA chain per
/// lane over the 16-wide chunks, then the lanes added in order (plus the empty tail's `+0.0`).
///
/// # Panics
/// If `q.len()` is not a multiple of sixteen, AVX-512F is missing, or a key lies outside `kd`.
pub(crate) fn scores(
    q: &[f32],
    kd: &[f32],
    stride: usize,
    a: usize,
    b: usize,
    sc: &mut [f32],
) -> usize {
    let hs = q.len();
    let done = (b - a) / 16 * 16;
    assert!(hs.is_multiple_of(16) && available());
    assert!(sc.len() >= done);
    if done == 0 {
        return 0;
    }
    assert!((a + done - 1) * stride + hs <= kd.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (asserted); every key row read is in bounds (asserted above),
    // and `sc` holds `done` scores.
    unsafe {
        x86::scores(q, kd.as_ptr().add(a * stride), stride, done, sc)
    };
    done
}

/// `o[h] ← Σⱼ p[h · n + j] · v[j]` for heads `h < heads`, accumulated into `o[h]` (row `h` at
/// `o[h · o_stride..][..hs]`) key by key in order with fused multiply-adds, value row `j` at
/// `v[j · stride..][..hs]`.
///
/// # Panics
/// If `hs` is not a multiple of sixteen, [`values_available`] is false, or an index lies out of
/// bounds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weighted_values(
    p: &[f32],
    n: usize,
    heads: usize,
    v: &[f32],
    stride: usize,
    hs: usize,
    o: &mut [f32],
    o_stride: usize,
) {
    assert!(hs.is_multiple_of(16) && values_available());
    if n == 0 || heads == 0 || hs == 0 {
        return;
    }
    assert!(p.len() >= heads * n && (n - 1) * stride + hs <= v.len());
    assert!((heads - 1) * o_stride + hs <= o.len());
    #[cfg(target_arch = "x86_64")]
    if !available() {
        // AVX2: up to four heads × sixteen dimensions in registers (eight vectors).
        for h0 in (0..heads).step_by(4) {
            for c in 0..hs / 16 {
                let (pp, vp) = (p[h0 * n..].as_ptr(), v[c * 16..].as_ptr());
                let op = o[h0 * o_stride + c * 16..].as_mut_ptr();
                // SAFETY: AVX2 + FMA + F16C are present (`values_available`, AVX-512F absent);
                // heads `h0..h0 + 4` (or fewer), dimensions `16c..16c + 16` and keys `0..n` lie
                // in bounds (asserted above).
                unsafe {
                    match heads - h0 {
                        1 => x86::weighted_avx2::<1>(pp, n, vp, stride, op, o_stride),
                        2 => x86::weighted_avx2::<2>(pp, n, vp, stride, op, o_stride),
                        3 => x86::weighted_avx2::<3>(pp, n, vp, stride, op, o_stride),
                        _ => x86::weighted_avx2::<4>(pp, n, vp, stride, op, o_stride),
                    }
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    for h0 in (0..heads).step_by(4) {
        for c0 in (0..hs / 16).step_by(4) {
            let (hn, cn) = ((heads - h0).min(4), (hs / 16 - c0).min(4));
            let (pp, vp) = (p[h0 * n..].as_ptr(), v[c0 * 16..].as_ptr());
            let op = o[h0 * o_stride + c0 * 16..].as_mut_ptr();
            macro_rules! go {
                ($($h:literal, $c:literal);*) => {
                    match (hn, cn) {
                        // SAFETY: AVX-512F is present; heads `h0..h0 + hn`, chunks
                        // `c0..c0 + cn` and keys `0..n` lie in bounds (asserted above).
                        $(($h, $c) => unsafe {
                            x86::weighted::<$h, $c>(pp, n, vp, stride, op, o_stride)
                        },)*
                        _ => unreachable!("at most four heads and four chunks"),
                    }
                };
            }
            go!(1, 1; 1, 2; 1, 3; 1, 4; 2, 1; 2, 2; 2, 3; 2, 4;
                3, 1; 3, 2; 3, 3; 3, 4; 4, 1; 4, 2; 4, 3; 4, 4);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn scores(
        q: &[f32],
        k: *const f32,
        stride: usize,
        keys: usize,
        sc: &mut [f32],
    ) {
        let chunks = q.len() / 16;
        for k0 in (0..keys).step_by(16) {
            let rows: [*const f32; 16] = std::array::from_fn(|i| k.add((k0 + i) * stride));
            let mut acc = [_mm512_setzero_ps(); 16];
            for c in 0..chunks {
                let qc = _mm512_loadu_ps(q.as_ptr().add(c * 16));
                for (a, row) in acc.iter_mut().zip(rows) {
                    *a = _mm512_fmadd_ps(qc, _mm512_loadu_ps(row.add(c * 16)), *a);
                }
            }
            let t = transpose16(acc);
            let mut s = t[0];
            for x in &t[1..] {
                s = _mm512_add_ps(s, *x);
            }
            s = _mm512_add_ps(s, _mm512_setzero_ps());
            _mm512_storeu_ps(sc.as_mut_ptr().add(k0), s);
        }
    }

    /// Rows ↔ columns of a 16 × 16 block: `out[c][r] = m[r][c]`, in four stages that each swap
    /// one bit of the row index with the same bit of the column index (rows paired by hand so
    /// that every stage is straight-line code on registers).
    #[inline(always)]
    unsafe fn transpose16(mut m: [__m512; 16]) -> [__m512; 16] {
        macro_rules! stage {
            ($bit:literal: $($r:literal)*) => {{
                let idx = const { [indices($bit, false), indices($bit, true)] };
                let lo = _mm512_loadu_si512(idx[0].as_ptr().cast());
                let hi = _mm512_loadu_si512(idx[1].as_ptr().cast());
                $(
                    let (a, b) = (m[$r], m[$r + $bit]);
                    m[$r] = _mm512_permutex2var_ps(a, lo, b);
                    m[$r + $bit] = _mm512_permutex2var_ps(a, hi, b);
                )*
            }};
        }
        stage!(8: 0 1 2 3 4 5 6 7);
        stage!(4: 0 1 2 3 8 9 10 11);
        stage!(2: 0 1 4 5 8 9 12 13);
        stage!(1: 0 2 4 6 8 10 12 14);
        m
    }

    /// Lane indices for a stage of [`transpose16`]: row `r` (bit clear) keeps its columns with
    /// the bit clear and takes those with the bit set from row `r + bit` (`16 +` picks the second
    /// operand); row `r + bit` the other way round.
    const fn indices(bit: usize, upper: bool) -> [i32; 16] {
        let mut out = [0i32; 16];
        let mut c = 0;
        while c < 16 {
            out[c] = match (c & bit == 0, upper) {
                (true, false) => c as i32,
                (false, false) => (16 + c - bit) as i32,
                (true, true) => (c + bit) as i32,
                (false, true) => (16 + c) as i32,
            };
            c += 1;
        }
        out
    }

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn weighted<const H: usize, const C: usize>(
        p: *const f32,
        n: usize,
        v: *const f32,
        stride: usize,
        o: *mut f32,
        o_stride: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; H];
        for (h, row) in acc.iter_mut().enumerate() {
            for (c, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(o.add(h * o_stride + c * 16));
            }
        }
        for j in 0..n {
            let vr = v.add(j * stride);
            let vs: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(vr.add(c * 16)));
            for (h, row) in acc.iter_mut().enumerate() {
                let pj = _mm512_set1_ps(*p.add(h * n + j));
                for (a, x) in row.iter_mut().zip(vs) {
                    *a = _mm512_fmadd_ps(pj, x, *a);
                }
            }
        }
        for (h, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                _mm512_storeu_ps(o.add(h * o_stride + c * 16), *a);
            }
        }
    }

    /// [`weighted`] for AVX2: `H ≤ 4` heads × sixteen dimensions (two vectors each) in
    /// registers, the same fused multiply-add per element and key, keys in order.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn weighted_avx2<const H: usize>(
        p: *const f32,
        n: usize,
        v: *const f32,
        stride: usize,
        o: *mut f32,
        o_stride: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; H];
        for (h, row) in acc.iter_mut().enumerate() {
            for (c, a) in row.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(h * o_stride + c * 8));
            }
        }
        for j in 0..n {
            let vr = v.add(j * stride);
            let (v0, v1) = (_mm256_loadu_ps(vr), _mm256_loadu_ps(vr.add(8)));
            // Indexed by a constant range: the accumulators stay in registers.
            #[allow(clippy::needless_range_loop)]
            for h in 0..H {
                let pj = _mm256_set1_ps(*p.add(h * n + j));
                acc[h][0] = _mm256_fmadd_ps(pj, v0, acc[h][0]);
                acc[h][1] = _mm256_fmadd_ps(pj, v1, acc[h][1]);
            }
        }
        for (h, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                _mm256_storeu_ps(o.add(h * o_stride + c * 8), *a);
            }
        }
    }
}
