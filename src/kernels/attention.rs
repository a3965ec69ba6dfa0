//! The host attention kernel behind [`crate::backend::flex::attention`]:
//! `softmax(mask(cap(q·kᵀ·scale)))·v` per query head, reading the cache in place, parallel over
//! (head, block of queries).
//!
//! Two shapes of the same computation:
//! - a few queries (decoding): tasks over (K/V head, run of keys), each reading its keys and
//!   values once for all the query heads that share them, combined by split-softmax rescaling;
//! - many queries (a prompt): the keys of each K/V head are transposed once, then a block of
//!   queries is scored against sixteen keys at a time in registers (a small GEMM with no
//!   horizontal sums), and `p·v` runs four queries at a time over sixteen dimensions.
//!
//! Both are plain loops the compiler vectorises ([`crate::kernels::math::vectorised`]); masked
//! positions get probability zero, sums over keys run in key order, so the output does not
//! depend on the thread count or the vector width.

use crate::kernels::math::{exp, vectorised};

mod few;
pub(crate) mod simd;

use few::attend_few;

/// Shape and options of one attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv: usize,
    pub head_size: usize,
    pub scale: f64,
    pub softcap: Option<f64>,
    /// Sliding window, when narrower than the positions attended over.
    pub window: Option<usize>,
}

/// A 4-d f32 tensor read in place through its strides (rows along the last dim contiguous).
pub(crate) struct Strided<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 3],
}

impl<'a> Strided<'a> {
    /// Elements `data[offset + b·s₀ + h·s₁ + j·s₂ ..][..hs]`; the caller has checked that every
    /// element of its shape lies in `data`.
    pub(crate) fn new(data: &'a [f32], offset: usize, strides: [usize; 3]) -> Self {
        Self {
            data,
            offset,
            strides,
        }
    }

    /// Elements `[b, h, j, 0..hs]`.
    pub(crate) fn row(&self, b: usize, h: usize, j: usize, hs: usize) -> &[f32] {
        let at = self.offset + b * self.strides[0] + h * self.strides[1] + j * self.strides[2];
        &self.data[at..at + hs]
    }

    /// Head `h` of batch 0: its elements from the first position on, and the distance between
    /// positions (row `j` at `j · stride`).
    pub(crate) fn head(&self, h: usize) -> (&[f32], usize) {
        (
            &self.data[self.offset + h * self.strides[1]..],
            self.strides[2],
        )
    }
}

mod block8;

use block8::block8;
#[cfg(test)]
use block8::block8_plain;

/// Tests and probes: the plain loops even where the register kernels could run (to compare
/// bits and speed; both give the same bits, so flipping it never changes a result).
#[cfg(test)]
pub(crate) static FORCE_PLAIN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Queries per task.
const BLOCK: usize = 16;
/// From this many queries on, the blocked path (its key transpose pays off).
const MIN_BLOCKED: usize = 8;

/// Runs the attention: `q` `[nh, t, hs]` at positions `pos..pos + t`, keys and values
/// `[1, nkv, ≥ pos + t, hs]`; output row `i` of head `h` goes to
/// `y[i · row_stride + h · head_stride..][..hs]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    q: &[f32],
    keys: &Strided<'_>,
    values: &Strided<'_>,
    heads: Heads,
    t: usize,
    pos: usize,
    y: &mut [f32],
    row_stride: usize,
    head_stride: usize,
) {
    use rayon::prelude::*;
    let (nh, nkv, hs) = (heads.n_head, heads.n_kv, heads.head_size);
    if t == 0 || nh == 0 || hs == 0 {
        return;
    }
    let s = pos + t;
    assert!(q.len() >= nh * t * hs);
    assert!(y.len() > (t - 1) * row_stride + (nh - 1) * head_stride + hs - 1);
    if t < MIN_BLOCKED {
        return attend_few(q, keys, values, heads, t, pos, y, row_stride, head_stride);
    }
    // Blocked path: keys per K/V head transposed to `[hs, s_pad]`, zero past `s` so that any
    // sixteen keys from a valid one on can be read.
    let s_pad = s.next_multiple_of(16) + 16;
    let mut kt = vec![0f32; nkv * hs * s_pad];
    for g in 0..nkv {
        let dst = &mut kt[g * hs * s_pad..][..hs * s_pad];
        for j in 0..s {
            for (d, &x) in keys.row(0, g, j, hs).iter().enumerate() {
                dst[d * s_pad + j] = x;
            }
        }
    }
    let y_addr = y.as_mut_ptr() as usize;
    let blocks = t.div_ceil(BLOCK);
    (0..nh * blocks).into_par_iter().for_each(|task| {
        let (h, blk) = (task / blocks, task % blocks);
        let g = h / (nh / nkv);
        let rows = blk * BLOCK..((blk + 1) * BLOCK).min(t);
        let task = Task {
            heads,
            pos,
            g,
            q: &q[(h * t + rows.start) * hs..(h * t + rows.end) * hs],
            first: rows.start,
            values,
        };
        let out = vectorised(
            #[inline(always)]
            || task.blocked(&kt[g * hs * s_pad..][..hs * s_pad], s_pad),
        );
        for (r, o) in out.chunks_exact(hs).enumerate() {
            // SAFETY: each (head, query) output slice belongs to exactly one task, and the
            // assert above keeps every slice inside `y`, which outlives the parallel loop.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    (y_addr as *mut f32).add((rows.start + r) * row_stride + h * head_stride),
                    hs,
                )
            };
            dst.copy_from_slice(o);
        }
    });
}

/// Scaled, capped scores → `exp(score − max)` in place; returns the max.
#[inline(always)]
fn scores_to_weights(sc: &mut [f32], heads: Heads) -> f32 {
    let scale = heads.scale as f32;
    for x in sc.iter_mut() {
        *x *= scale;
    }
    if let Some(c) = heads.softcap {
        let c = c as f32;
        for x in sc.iter_mut() {
            *x = (*x / c).tanh() * c;
        }
    }
    let m = lanes_max(sc);
    for x in sc.iter_mut() {
        *x = exp(*x - m);
    }
    m
}

/// One task: a query head reading K/V head `g`, queries `first..first + q.len() / hs`.
struct Task<'a> {
    heads: Heads,
    pos: usize,
    g: usize,
    q: &'a [f32],
    first: usize,
    values: &'a Strided<'a>,
}

impl Task<'_> {
    fn n(&self) -> usize {
        self.q.len() / self.heads.head_size
    }

    /// Keys query `r` of the task sees: `lo..=abs`.
    fn span(&self, r: usize) -> (usize, usize) {
        let abs = self.pos + self.first + r;
        let lo = self.heads.window.map_or(0, |w| (abs + 1).saturating_sub(w));
        (lo, abs)
    }

    /// Scaled, capped scores → probabilities, in place.
    #[inline(always)]
    fn softmax(&self, sc: &mut [f32]) {
        scores_to_weights(sc, self.heads);
        let sum = lanes_sum(sc);
        for x in sc.iter_mut() {
            *x /= sum;
        }
    }

    /// Many queries: scores for eight queries × sixteen keys at a time from the transposed keys
    /// `kt` (`[hs, s_pad]`), then `p·v` eight queries × sixteen dimensions at a time over the
    /// keys the block sees (masked ones with probability zero), both with [`block8`]. Outputs
    /// `[n, hs]`.
    #[inline(always)]
    fn blocked(&self, kt: &[f32], s_pad: usize) -> Vec<f32> {
        let hs = self.heads.head_size;
        let n = self.n();
        let (lo0, _) = self.span(0);
        let (_, hi) = self.span(n - 1);
        let keys = hi + 1 - lo0;
        let width = keys.next_multiple_of(16);
        // Scores `[rows, width]`, rows padded to whole blocks of eight (zero queries).
        let rows = n.next_multiple_of(8);
        let mut p = vec![0f32; rows * width];
        for r0 in (0..rows).step_by(8) {
            // The block's queries dimension by dimension: `qt[d][r]`.
            let mut qt = vec![[0f32; 8]; hs];
            for (r, qr) in self.q[r0 * hs..].chunks_exact(hs).take(8).enumerate() {
                for (qd, &x) in qt.iter_mut().zip(qr) {
                    qd[r] = x;
                }
            }
            for c in (0..width).step_by(16) {
                let acc = block8(&qt, &kt[lo0 + c..], s_pad);
                for (a, prow) in acc.iter().zip(p[r0 * width + c..].chunks_mut(width)) {
                    prow[..16].copy_from_slice(a);
                }
            }
        }
        for r in 0..n {
            let (lo, abs) = self.span(r);
            let row = &mut p[r * width..(r + 1) * width];
            let (a, b) = (lo - lo0, abs - lo0);
            self.softmax(&mut row[a..=b]);
            row[..a].fill(0.0);
            row[b + 1..].fill(0.0);
        }
        let (vd, vstride) = self.values.head(self.g);
        let vd = &vd[lo0 * vstride..];
        let full = hs / 16 * 16;
        let mut out = vec![0f32; rows * hs];
        for r0 in (0..rows).step_by(8) {
            // The block's probabilities key by key: `pt[c][r]`.
            let mut pt = vec![[0f32; 8]; keys];
            for (r, pr) in p[r0 * width..].chunks_exact(width).take(8).enumerate() {
                for (pc, &x) in pt.iter_mut().zip(pr) {
                    pc[r] = x;
                }
            }
            for d0 in (0..full).step_by(16) {
                let acc = block8(&pt, &vd[d0..], vstride);
                for (a, orow) in acc.iter().zip(out[r0 * hs + d0..].chunks_mut(hs)) {
                    orow[..16].copy_from_slice(a);
                }
            }
            if full < hs {
                for (r, orow) in out[r0 * hs..(r0 + 8) * hs].chunks_exact_mut(hs).enumerate() {
                    for (pc, vrow) in pt.iter().zip(vd.chunks(vstride)) {
                        for (o, &x) in orow[full..].iter_mut().zip(&vrow[full..hs]) {
                            *o = pc[r].mul_add(x, *o);
                        }
                    }
                }
            }
        }
        out.truncate(n * hs);
        out
    }
}

/// `a·b` in sixteen lanes, then across them.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0f32, |s, (x, y)| x.mul_add(*y, s));
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest element (NaN when there is one), in sixteen lanes then across them.
#[inline(always)]
fn lanes_max(x: &[f32]) -> f32 {
    let max = |a: f32, b: f32| if a > b || a.is_nan() { a } else { b };
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| max(m, v));
    for c in chunks {
        for l in 0..16 {
            acc[l] = max(acc[l], c[l]);
        }
    }
    acc.iter().fold(tail, |m, &v| max(m, v))
}

/// A sum in sixteen lanes, then across them: the same value whatever the vector width.
#[inline(always)]
fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests;
