//! A low-rank term's `x·A` summed inside a decode step's weight pass.
//!
//! A LoRA term adds `s·(x·A)·B` to a linear's output. `A` (`[k, r]`) is small and cold; read
//! beside the first panels of a weight pass it is one more stream under the weight's, its
//! multiply-adds fill the gaps between the weight's, and its `x·A` is ready early (a tile shares
//! it with the linear's other tiles: [`crate::kernels::linear::decode`]). Each output is still
//! one fused multiply-add chain over the rows in order, starting from zero: the bits of
//! [`crate::kernels::linear::tiles`]'s `tile`.

use super::{panel_run_of, PANEL};
use crate::kernels::weight::Weight;

/// At most this many groups of 16 columns of `A` ride along (64 columns: every rank up to 64
/// in one pass, up to 128 split between two threads).
const SIDES: usize = 4;

/// Columns `c..c + width` of a term's `A` (`[k, stride]`, row-major): `a` starts at column `c`
/// of row 0 and runs to the end of `A`; their `x·A` (`width` values) goes to `xa`.
pub(crate) struct Side<'a, S> {
    pub a: &'a [S],
    pub stride: usize,
    pub width: usize,
    pub xa: &'a mut [f32],
}

impl<S> Side<'_, S> {
    /// Whether the kernels can take this side for `k` rows: `0 < width ≤ 16 · SIDES`, within
    /// a row, every row's columns inside `a`, and `width` outputs.
    pub(crate) fn fits(&self, k: usize) -> bool {
        k > 0
            && self.width > 0
            && self.width <= 16 * SIDES
            && self.width <= self.stride
            && self.a.len() >= (k - 1) * self.stride + self.width
            && self.xa.len() == self.width
    }

    /// Leading rows whose 16-column loads of every group stay inside `a` (all, unless `width`
    /// is not a multiple of 16 and `a` ends soon after); the rest are read exactly.
    pub(crate) fn whole_rows(&self, k: usize) -> usize {
        let span = 16 * self.width.div_ceil(16);
        if self.a.len() < span {
            return 0;
        }
        ((self.a.len() - span) / self.stride + 1).min(k)
    }
}

/// Whether this CPU computes a side in the weight pass (AVX-512F; elsewhere the caller runs the
/// two apart).
pub(crate) fn in_pass() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::math::avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Outputs of 16-column panels `first..` into `out` as [`super::panel_run_of`] gives them, and
/// `side`'s `x·A` summed in the pass's first panels, handed to `ready` as soon as it is done
/// (before the rest of the pass). `false`, nothing written and `ready` not called, where the
/// kernels cannot: not [`in_pass`], `out` empty or a side that does not [`Side::fits`].
pub(crate) fn panel_run_side<W: Weight, S: Weight>(
    x: &[f32],
    p: &[W],
    first: usize,
    out: &mut [f32],
    mut side: Side<'_, S>,
    ready: &mut dyn FnMut(&[f32]),
) -> bool {
    let k = x.len();
    if out.is_empty() || !side.fits(k) || !in_pass() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // As many panels as `panel_run_of` reads side by side.
        let group = if std::mem::size_of::<W>() == 2 { 8 } else { 4 };
        let head = out.len().min(group * PANEL);
        let end = (first * PANEL + head).div_ceil(PANEL);
        assert!(p.len() >= end * k * PANEL);
        let (now, rest) = out.split_at_mut(head);
        use super::x86::side_avx512;
        let s = &mut side;
        // SAFETY: the CPU has AVX-512F (`in_pass`); `now` holds 1 to `16 · group` outputs of
        // panels that lie in `p` (asserted above); the side fits `k` rows (checked above) and
        // has the groups named.
        unsafe {
            match (group, s.width.div_ceil(16)) {
                (8, 1) => side_avx512::<W, S, 8, 1>(x, p, first, now, s),
                (8, 2) => side_avx512::<W, S, 8, 2>(x, p, first, now, s),
                (8, 3) => side_avx512::<W, S, 8, 3>(x, p, first, now, s),
                (8, _) => side_avx512::<W, S, 8, 4>(x, p, first, now, s),
                (_, 1) => side_avx512::<W, S, 4, 1>(x, p, first, now, s),
                (_, 2) => side_avx512::<W, S, 4, 2>(x, p, first, now, s),
                (_, 3) => side_avx512::<W, S, 4, 3>(x, p, first, now, s),
                (_, _) => side_avx512::<W, S, 4, 4>(x, p, first, now, s),
            }
        }
        ready(side.xa);
        if !rest.is_empty() {
            panel_run_of(x, p, first + head / PANEL, rest, PANEL);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, first, ready);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::to_panels_of;
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Each output one multiply-add chain over the rows in order, from zero.
    fn chain<T: Weight>(x: &[f32], a: &[T], r: usize) -> Vec<u32> {
        (0..r)
            .map(|j| {
                let v = (0..x.len()).fold(0f32, |acc, i| x[i].mul_add(a[i * r + j].to_f32(), acc));
                v.to_bits()
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    fn case<W: Weight + bytemuck::Zeroable, S: Weight>(from: fn(f32) -> W, side: fn(f32) -> S) {
        if !in_pass() {
            return; // nothing to compare: the caller runs the two apart
        }
        for (k, n, first, cols) in [
            (1, 16, 0, 16),
            (3, 40, 1, 24),
            (17, 200, 2, 150),
            (64, 300, 0, 300),
        ] {
            let w: Vec<W> = values(k * n, 7).into_iter().map(from).collect();
            let p = to_panels_of(&w, k, n, PANEL);
            let x = values(k, 8);
            let mut alone = vec![0f32; cols];
            panel_run_of(&x, &p, first, &mut alone, PANEL);
            for r in [1, 4, 8, 15, 16, 24, 48, 100, 128, 136] {
                let a: Vec<S> = values(k * r, r as u32).into_iter().map(side).collect();
                let want = chain(&x, &a, r);
                // All of `A` (up to 64 columns), or a share that starts past column 0 and
                // ends before the last, as a tile takes it.
                for (c0, c1) in [(0, r.min(64)), (r / 3, r - r / 4)] {
                    if c0 == c1 {
                        continue;
                    }
                    let (mut out, mut xa) = (vec![0f32; cols], vec![f32::NAN; c1 - c0]);
                    let mut got = None;
                    let side = Side {
                        a: &a[c0..],
                        stride: r,
                        width: c1 - c0,
                        xa: &mut xa,
                    };
                    let mut ready = |v: &[f32]| got = Some(bits(v));
                    assert!(panel_run_side(&x, &p, first, &mut out, side, &mut ready));
                    assert_eq!(bits(&out), bits(&alone), "weight, k={k} n={n} r={r}");
                    assert_eq!(bits(&xa), want[c0..c1], "x·A, k={k} r={r} {c0}..{c1}");
                    assert_eq!(got.as_deref(), Some(&want[c0..c1]));
                }
            }
        }
    }

    /// With `x·A` in the pass, the weight's outputs and `x·A` are those of the two apart, bit
    /// for bit — every pairing of weight and factor types, widths that are not whole groups
    /// (their loads run into the next row), shares that start past column 0, one row to many,
    /// tiles that start past panel 0 or end in a partial panel.
    #[test]
    fn x_a_in_the_weight_pass_gives_the_same_bits() {
        use half::{bf16, f16};
        case::<f32, f32>(|v| v, |v| v);
        case::<f32, bf16>(|v| v, bf16::from_f32);
        case::<bf16, bf16>(bf16::from_f32, bf16::from_f32);
        case::<bf16, f32>(bf16::from_f32, |v| v);
        case::<f16, f16>(f16::from_f32, f16::from_f32);
        case::<f16, f32>(f16::from_f32, |v| v);
    }

    /// What the kernels cannot take is refused before anything is written.
    #[test]
    fn sides_the_kernels_cannot_take_are_refused() {
        let (k, n) = (4, 32);
        let p = to_panels_of(&values(k * n, 1), k, n, PANEL);
        let x = values(k, 2);
        // (stride, width, `A`'s length, `xa`'s length, columns)
        for (stride, width, a_len, xa_len, cols) in [
            (80, 80, 4 * 80, 80, 32), // more columns than registers
            (8, 0, 32, 0, 32),        // nothing to compute
            (8, 8, 31, 8, 32),        // `A` short of its last row
            (8, 8, 32, 7, 32),        // `xa` of the wrong length
            (8, 16, 64, 16, 32),      // wider than a row
            (8, 8, 32, 8, 0),         // no weight columns
        ] {
            let a = values(a_len, 3);
            let (mut out, mut xa) = (vec![1f32; cols], vec![1f32; xa_len]);
            let side = Side {
                a: &a,
                stride,
                width,
                xa: &mut xa,
            };
            let mut called = false;
            let mut ready = |_: &[f32]| called = true;
            assert!(
                !panel_run_side(&x, &p, 0, &mut out, side, &mut ready),
                "{stride} {width}"
            );
            assert!(!called && out.iter().chain(&xa).all(|&v| v == 1.0));
        }
        let whole = |a_len: usize, stride: usize, width: usize| {
            let (a, mut xa) = (vec![0f32; a_len], vec![0f32; width]);
            Side {
                a: &a,
                stride,
                width,
                xa: &mut xa,
            }
            .whole_rows(10)
        };
        assert_eq!(whole(160, 16, 16), 10);
        assert_eq!(whole(80, 8, 8), 9);
        assert_eq!(whole(40, 4, 4), 7);
        assert_eq!(whole(20, 2, 1), 3);
        assert_eq!(whole(78, 8, 6), 8); // columns 2..8 of a [10, 8] `A`
    }
}
