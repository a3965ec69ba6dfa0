//! The attention of a few queries (decoding): tasks over (K/V head, run of keys), combined by
//! split-softmax rescaling.

use super::*;

/// Keys per task when a few queries are decoded.
const KEYS_PER_TASK: usize = 128;

/// [`attend`] for fewer than [`MIN_BLOCKED`] queries (decoding): one task per K/V head and run
/// of [`KEYS_PER_TASK`] keys reads those keys and values once for every query head of its group
/// and leaves, per (head, query), the run's largest score, its sum of `exp(score − max)` and
/// `Σ exp(score − max)·v`; the runs are then combined in order (the usual split-softmax
/// rescaling). Long caches spread over every thread, and a group's heads share one read of
/// the cache. The runs are fixed, so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_few(
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
    let group = nh / nkv;
    let runs = (pos + t).div_ceil(KEYS_PER_TASK);
    // Per task: for each (head of the group, query) `[max, sum, o[0..hs]]`.
    let width = hs + 2;
    let simd = hs.is_multiple_of(16) && simd::available();
    let simd_values = hs.is_multiple_of(16) && simd::values_available();
    #[cfg(test)]
    let (simd, simd_values) = {
        let plain = FORCE_PLAIN.load(std::sync::atomic::Ordering::Relaxed);
        (simd && !plain, simd_values && !plain)
    };
    let partial = |task: usize| {
        let (g, run) = (task / runs, task % runs);
        let (k0, k1) = (
            run * KEYS_PER_TASK,
            ((run + 1) * KEYS_PER_TASK).min(pos + t),
        );
        let mut out = vec![0f32; group * t * width];
        vectorised(
            #[inline(always)]
            || {
                let mut sc = vec![0f32; group * (k1 - k0)];
                // A (head, query) that sees no key of this run keeps max = -∞ (skipped below).
                for o in out.chunks_exact_mut(width) {
                    o[0] = f32::NEG_INFINITY;
                }
                for r in 0..t {
                    let abs = pos + r;
                    let lo = heads.window.map_or(0, |w| (abs + 1).saturating_sub(w));
                    let (a, b) = (lo.max(k0), (abs + 1).min(k1));
                    if a >= b {
                        continue;
                    }
                    let n = b - a;
                    // Scores: each key row read once for the group's heads (sixteen keys at a
                    // time in registers where the CPU allows; the same bits).
                    let mut from = a;
                    if simd {
                        let (kd, kstride) = keys.head(g);
                        for hl in 0..group {
                            let h = g * group + hl;
                            let qh = &q[(h * t + r) * hs..][..hs];
                            let s = &mut sc[hl * n..(hl + 1) * n];
                            from = a + simd::scores(qh, kd, kstride, a, b, s);
                        }
                    }
                    for j in from..b {
                        let kr = keys.row(0, g, j, hs);
                        for hl in 0..group {
                            let h = g * group + hl;
                            sc[hl * n + j - a] = dot(&q[(h * t + r) * hs..][..hs], kr);
                        }
                    }
                    for hl in 0..group {
                        let s = &mut sc[hl * n..(hl + 1) * n];
                        let m = scores_to_weights(s, heads);
                        let o = &mut out[(hl * t + r) * width..][..width];
                        o[0] = m;
                        o[1] = lanes_sum(s);
                    }
                    // `Σ p·v`, each value row read once for the group's heads.
                    let (vd, vstride) = values.head(g);
                    if simd_values {
                        let o = &mut out[r * width + 2..];
                        let v = &vd[a * vstride..];
                        simd::weighted_values(&sc, n, group, v, vstride, hs, o, t * width);
                        continue;
                    }
                    for j in a..b {
                        let vr = &vd[j * vstride..][..hs];
                        for hl in 0..group {
                            let p = sc[hl * n + j - a];
                            let o = &mut out[(hl * t + r) * width + 2..][..hs];
                            for (od, &x) in o.iter_mut().zip(vr) {
                                *od = p.mul_add(x, *od);
                            }
                        }
                    }
                }
            },
        );
        out
    };
    let parts: Vec<Vec<f32>> = if crate::kernels::weight::threads() > 1 && nkv * runs > 1 {
        (0..nkv * runs).into_par_iter().map(partial).collect()
    } else {
        (0..nkv * runs).map(partial).collect()
    };
    vectorised(
        #[inline(always)]
        || {
            let mut acc = vec![0f32; hs];
            for h in 0..nh {
                let (g, hl) = (h / group, h % group);
                for r in 0..t {
                    let at = |run: usize| &parts[g * runs + run][(hl * t + r) * width..][..width];
                    let m = (0..runs).fold(f32::NEG_INFINITY, |m, run| {
                        let x = at(run)[0];
                        if x > m || x.is_nan() {
                            x
                        } else {
                            m
                        }
                    });
                    acc.fill(0.0);
                    let mut sum = 0f32;
                    for run in 0..runs {
                        let p = at(run);
                        if p[0] == f32::NEG_INFINITY {
                            continue; // no key of this run is visible to this query
                        }
                        let f = exp(p[0] - m);
                        sum = p[1].mul_add(f, sum);
                        for (a, &o) in acc.iter_mut().zip(&p[2..]) {
                            *a = o.mul_add(f, *a);
                        }
                    }
                    let dst = &mut y[r * row_stride + h * head_stride..][..hs];
                    for (d, &a) in dst.iter_mut().zip(&acc) {
                        *d = a / sum;
                    }
                }
            }
        },
    );
}
