//! Transposing weights at load time: checkpoints store `[out, in]`, [`crate::model::Linear`] holds
//! `[in, out]`.

use crate::kernels::weight::Weight;

/// `[rows, cols]` row-major → `[cols, rows]` row-major: large matrices (a load's weights) in 32×32
/// blocks, bands of 32 output rows in parallel on rayon's threads; small ones gathered directly.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let data = &data[..rows * cols];
    if data.len() < SMALL {
        // An adapter's factors: gathered column by column (the matrix sits in L1 / L2), written
        // once — the banded path's zeroed output is cleared by `memset` at this size, which
        // costs more than the transposing.
        let mut t = Vec::with_capacity(data.len());
        for c in 0..cols {
            t.extend((0..rows).map(|r| data[r * cols + c]));
        }
        return t;
    }
    transpose_parts(&[data], cols)
}

/// Below this many values [`transpose`] gathers columns instead of transposing in bands.
const SMALL: usize = 1 << 16;

/// The transpose of `parts` (each `[rows_p, cols]` row-major) stacked by rows, written straight
/// from the parts: a fused q/k/v weight stored as three tensors needs no concatenated copy.
pub(crate) fn transpose_parts(parts: &[&[f32]], cols: usize) -> Vec<f32> {
    let rows = stacked_rows(parts, cols);
    let mut t = crate::kernels::buffer::zeroed::<f32>(rows * cols);
    for_bands(&mut t, rows, |bi, out| {
        let mut offset = 0;
        for part in parts {
            let n = part.len() / cols;
            band(part, n, cols, bi, out, rows, offset);
            offset += n;
        }
    });
    t
}

/// Rows of `parts` stacked, each `cols` wide (0 when `cols` is 0).
fn stacked_rows<S>(parts: &[&[S]], cols: usize) -> usize {
    assert!(parts.iter().all(|p| p.len() % cols.max(1) == 0));
    parts.iter().map(|p| p.len() / cols.max(1)).sum()
}

/// [`transpose_parts_map`] of one part (`[rows, cols]`).
#[cfg(test)]
pub(crate) fn transpose_map<S: Weight, T: Copy + bytemuck::Zeroable + Send>(
    data: &[S],
    rows: usize,
    cols: usize,
    map: impl Fn(&[f32], &mut [T]) + Sync,
) -> Vec<T> {
    transpose_parts_map(&[&data[..rows * cols]], cols, map)
}

/// The transpose of `parts` stacked by rows (as [`transpose_parts`]), of f32, bf16 or f16 values
/// straight into another element type: each band of 32 output rows is transposed `SEGMENT`
/// input rows at a time into a small f32 scratch and then `map`ped into the output (no full-size
/// f32 copy, and no band-sized scratch: a 49152-row head would need 6 MB per band, which the
/// allocator then keeps in each worker thread's arena). 16-bit values are widened (exactly) a
/// block at a time on the way.
pub(crate) fn transpose_parts_map<S: Weight, T: Copy + bytemuck::Zeroable + Send>(
    parts: &[&[S]],
    cols: usize,
    map: impl Fn(&[f32], &mut [T]) + Sync,
) -> Vec<T> {
    const SEGMENT: usize = 2048;
    let rows = stacked_rows(parts, cols);
    let mut t = crate::kernels::buffer::zeroed::<T>(rows * cols);
    for_bands(&mut t, rows, |bi, out| {
        let width = out.len() / rows;
        let c0 = bi * BLOCK;
        let mut scratch = vec![0f32; width * SEGMENT.min(rows)];
        let mut block = Vec::new();
        let mut offset = 0;
        for data in parts {
            let part_rows = data.len() / cols;
            let wide = as_f32(data);
            for lo in (0..part_rows).step_by(SEGMENT) {
                let hi = (lo + SEGMENT).min(part_rows);
                let n = hi - lo;
                let seg = &mut scratch[..width * n];
                match wide {
                    Some(d) => band(&d[lo * cols..hi * cols], n, cols, bi, seg, n, 0),
                    None => {
                        // This band's columns of the segment's rows, widened: an `[n, width]`
                        // block.
                        block.clear();
                        for r in lo..hi {
                            let row = &data[r * cols + c0..r * cols + c0 + width];
                            block.extend(row.iter().map(|x| x.to_f32()));
                        }
                        band(&block, n, width, 0, seg, n, 0);
                    }
                }
                for (c, col) in seg.chunks_exact(n).enumerate() {
                    let at = c * rows + offset;
                    map(col, &mut out[at + lo..at + hi]);
                }
            }
            offset += part_rows;
        }
    });
    t
}

/// `data` as f32 when it is.
pub(crate) fn as_f32<S: Weight>(data: &[S]) -> Option<&[f32]> {
    (std::any::TypeId::of::<S>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: `S` is `f32` (same type id), so the slice is reinterpreted as itself.
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<f32>(), data.len()) }
    })
}

const BLOCK: usize = 32;

/// Runs `f(band index, band)` over bands of `BLOCK` output rows (`rows` wide) of `t`, in parallel
/// for large matrices.
fn for_bands<T: Send>(t: &mut [T], rows: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if t.is_empty() {
        return;
    }
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if t.len() >= 1 << 16 {
            t.par_chunks_mut(BLOCK * rows)
                .enumerate()
                .for_each(|(bi, out)| {
                    crate::kernels::buffer::populate(out);
                    f(bi, out)
                });
            return;
        }
    }
    t.chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(bi, out)| f(bi, out));
}

/// Output rows `bi·32 ..` (input columns `c0..c1`) of the transpose of `data` (`[rows, cols]`)
/// into `out` (rows `stride` apart; input row `r` lands in column `offset + r`): 8×8 register
/// transposes over the largest part of each 32×32 block whose sides are multiples of eight (all
/// of it for large matrices; most of the rank-16 matrices of an adapter), plain copies for the
/// rest.
fn band(
    data: &[f32],
    rows: usize,
    cols: usize,
    bi: usize,
    out: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let c0 = bi * BLOCK;
    let c1 = (c0 + BLOCK).min(cols);
    #[cfg(target_arch = "x86_64")]
    let avx = std::arch::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    let avx = false;
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        // The part done in registers: rows r0..r8, columns c0..c8.
        let (r8, c8) = if avx {
            (r0 + (r1 - r0) / 8 * 8, c0 + (c1 - c0) / 8 * 8)
        } else {
            (r0, c0)
        };
        #[cfg(target_arch = "x86_64")]
        for r in (r0..r8).step_by(8) {
            for c in (c0..c8).step_by(8) {
                assert!((r + 7) * cols + c + 8 <= data.len());
                assert!((c - c0 + 7) * stride + offset + r + 8 <= out.len());
                // SAFETY: AVX is present (`avx`, else the ranges are empty); the asserts keep
                // the 8×8 block inside `data` and its transpose inside `out`.
                unsafe {
                    x86::tile8(
                        data.as_ptr().add(r * cols + c),
                        cols,
                        out.as_mut_ptr().add((c - c0) * stride + offset + r),
                        stride,
                    )
                };
            }
        }
        for r in r0..r1 {
            let from = if r < r8 { c8 } else { c0 };
            for (c, &v) in data[r * cols + from..r * cols + c1].iter().enumerate() {
                out[(from - c0 + c) * stride + offset + r] = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Transposes the 8×8 block at `src` (rows `stride` apart) into `dst` (rows `dst_stride`
    /// apart).
    ///
    /// # Safety
    /// AVX must be present; the eight rows of eight floats at `src` and at `dst` must be valid.
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn tile8(src: *const f32, stride: usize, dst: *mut f32, dst_stride: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * stride)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let o = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, v) in o.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * dst_stride), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Parts stacked by rows transpose as their concatenation would (the fused q/k/v weight of
    /// a checkpoint that stores the three projections apart), f32 and 16-bit, with parts that
    /// split the 32×32 blocks and the 8×8 register tiles unevenly.
    #[test]
    fn stacked_parts_transpose_as_their_concatenation() {
        for (split, cols) in [
            (&[576, 192, 192][..], 576),
            (&[13, 1, 30][..], 37),
            (&[8, 24, 9][..], 64),
            (&[0, 5][..], 3),
            (&[2100, 7][..], 40),
        ] {
            let rows: usize = split.iter().sum();
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut parts = Vec::new();
            let mut at = 0;
            for &n in split {
                parts.push(&data[at * cols..(at + n) * cols]);
                at += n;
            }
            assert_eq!(
                super::transpose_parts(&parts, cols),
                super::transpose(&data, rows, cols),
                "{split:?} x {cols}"
            );
            let small: Vec<half::bf16> = (0..rows * cols)
                .map(|i| half::bf16::from_f32((i % 251) as f32))
                .collect();
            let mut small_parts = Vec::new();
            let mut at = 0;
            for &n in split {
                small_parts.push(&small[at * cols..(at + n) * cols]);
                at += n;
            }
            let negate = |a: &[f32], b: &mut [f32]| a.iter().zip(b).for_each(|(x, y)| *y = -x);
            assert_eq!(
                super::transpose_parts_map(&small_parts, cols, negate),
                super::transpose_map(&small, rows, cols, negate),
                "{split:?} x {cols}, 16-bit"
            );
        }
    }

    #[test]
    fn transpose_any_shape() {
        for (rows, cols) in [
            (1, 1),
            (1, 70),
            (33, 1),
            (31, 65),
            (64, 64),
            (100, 37),
            (96, 130),
            (300, 576),
            // Adapter shapes: rank 16 (and odd ranks) either way round.
            (16, 576),
            (576, 16),
            (48, 960),
            (12, 100),
            (1000, 7),
            // Several segments of transpose_map, the last one partial.
            (4100, 40),
            (2081, 70),
        ] {
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = super::transpose(&data, rows, cols);
            let neg = super::transpose_map(&data, rows, cols, |a: &[f32], b: &mut [i64]| {
                a.iter().zip(b).for_each(|(x, y)| *y = -(*x as i64))
            });
            // From 16-bit values (small integers: exact in bf16), widened on the way.
            let small: Vec<half::bf16> = (0..rows * cols)
                .map(|i| half::bf16::from_f32((i % 251) as f32))
                .collect();
            let wide: Vec<f32> = small.iter().map(|x| x.to_f32()).collect();
            let t16 = super::transpose(&wide, rows, cols);
            let from =
                super::transpose_map(&small, rows, cols, |a, b: &mut [f32]| b.copy_from_slice(a));
            assert_eq!(from, t16, "{rows}x{cols} from another element type");
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        data[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                    assert_eq!(neg[c * rows + r], -((r * cols + c) as i64));
                }
            }
        }
    }
}
