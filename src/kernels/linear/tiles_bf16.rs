//! The matrix–vector kernel of [`crate::kernels::linear::tiles`] for bf16 weights (AVX-512F).
//!
//! A bf16 value is the upper half of an f32, so one 64-byte load of 32 weights gives the 16
//! even columns by shifting each 32-bit lane up 16 bits and the 16 odd columns by clearing each
//! lane's low half: two plain integer operations, where widening 16 values at a time
//! (`vpmovzxwd`) costs a shuffle per 16. The output tile is accumulated in that even/odd order
//! and put back in column order once at the end. Each output is still the same fused
//! multiply-adds over the rows in row order, so the results are bit for bit those of the
//! generic kernel (and of [`crate::kernels::linear::batch`] and
//! [`crate::kernels::linear::prefill`]).

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::tile_avx512_bf16;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    /// Rows per pass over the output tile (one 64-byte line of each per 32 columns).
    const ROWS: usize = 8;

    /// `out[j] = Σ_i x[i]·W[i, j0 + j]` for the whole 32-column blocks of `out`, which must hold
    /// zeros (the same in either column order); the columns past the last whole block are left
    /// to the caller (returns where they start).
    ///
    /// # Safety
    /// The CPU has AVX-512F and `W` `[x.len(), n]` covers columns `j0..j0 + out.len()`.
    #[target_feature(enable = "avx512f,fma")]
    pub(crate) unsafe fn tile_avx512_bf16(
        x: &[f32],
        w: &[bf16],
        n: usize,
        j0: usize,
        out: &mut [f32],
    ) -> usize {
        debug_assert!(j0 + out.len() <= n && w.len() >= x.len() * n);
        let blocks = out.len() / 32 * 32;
        let o = out.as_mut_ptr();
        let base = w.as_ptr() as *const u16;
        let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
        let load = |p: *const u16| _mm512_castps_si512(_mm512_loadu_ps(p as *const f32));
        let mut i = 0;
        while i + ROWS <= x.len() {
            let p: [*const u16; ROWS] = std::array::from_fn(|r| base.add((i + r) * n + j0));
            let xs: [__m512; ROWS] = std::array::from_fn(|r| _mm512_set1_ps(x[i + r]));
            // The next pass's rows lie a whole weight row (often pages) apart, which the
            // hardware prefetchers do not follow: one prefetch per row and cache line ahead, into
            // L2 as in the generic kernel.
            let ahead = i + 2 * ROWS <= x.len();
            let mut j = 0;
            while j < blocks {
                if ahead {
                    for pr in &p {
                        _mm_prefetch::<_MM_HINT_T1>(pr.add(ROWS * n + j) as *const i8);
                    }
                }
                let mut even = _mm512_loadu_ps(o.add(j));
                let mut odd = _mm512_loadu_ps(o.add(j + 16));
                for r in 0..ROWS {
                    let v = load(p[r].add(j));
                    let e = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                    let d = _mm512_castsi512_ps(_mm512_and_si512(v, high));
                    even = _mm512_fmadd_ps(xs[r], e, even);
                    odd = _mm512_fmadd_ps(xs[r], d, odd);
                }
                _mm512_storeu_ps(o.add(j), even);
                _mm512_storeu_ps(o.add(j + 16), odd);
                j += 32;
            }
            i += ROWS;
        }
        while i < x.len() {
            let p = base.add(i * n + j0);
            let xi = _mm512_set1_ps(x[i]);
            let mut j = 0;
            while j < blocks {
                let v = load(p.add(j));
                let e = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                let d = _mm512_castsi512_ps(_mm512_and_si512(v, high));
                _mm512_storeu_ps(o.add(j), _mm512_fmadd_ps(xi, e, _mm512_loadu_ps(o.add(j))));
                let od = o.add(j + 16);
                _mm512_storeu_ps(od, _mm512_fmadd_ps(xi, d, _mm512_loadu_ps(od)));
                j += 32;
            }
            i += 1;
        }
        // Back to column order: even lane t is column 2t, odd lane t column 2t + 1.
        let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        let hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        let mut j = 0;
        while j < blocks {
            let (even, odd) = (_mm512_loadu_ps(o.add(j)), _mm512_loadu_ps(o.add(j + 16)));
            _mm512_storeu_ps(o.add(j), _mm512_permutex2var_ps(even, lo, odd));
            _mm512_storeu_ps(o.add(j + 16), _mm512_permutex2var_ps(even, hi, odd));
            j += 32;
        }
        blocks
    }
}
