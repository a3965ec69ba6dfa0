//! Attention and RoPE on burn-flex tensors, in place, by the host kernels
//! ([`crate::kernels::attention`], [`crate::kernels::math::rotate`]): the burn-op forms copy the
//! strided views of the cache and the score tensors element by element and run a dozen ops per
//! layer; here the heads' queries go through the cache in place.
//!
//! The same steps as the burn-op forms ([`crate::backend::reference`]) — scaled `q·kᵀ`, optional
//! soft-capping, causal (and sliding-window) mask, softmax, `p·v` — so results differ only by
//! rounding (the parity tests hold both to the reference). [`attend_qkv`] starts from the fused
//! `[Q | K | V]` projection: RoPE, the cache write and the attention in one go, the output
//! already in `[t, heads · head_size]` order.

use burn::prelude::*;

use super::{f32s, prim};
use crate::backend::ops::{AttentionSpec, Heads, RopeTables};
use crate::backend::{reference, Flex};
use crate::kernels::attention::{attend, Strided};
use crate::kernels::math::{rotate, MAX_ROTARY};

/// [`crate::backend::ModelOps::attend_qkv`]: RoPE and the head split on the host, the cache
/// written by `append`, the attention by the host kernel; the burn-op form where the tensors
/// are not plain f32 or the shapes disagree (decided before anything is written).
pub(crate) fn attend_qkv(
    qkv: Tensor<Flex, 3>,
    heads: Heads,
    rope: &RopeTables<Flex>,
    pos: usize,
    append: impl FnOnce(Tensor<Flex, 4>, Tensor<Flex, 4>) -> (Tensor<Flex, 4>, Tensor<Flex, 4>),
) -> Tensor<Flex, 3> {
    let Some((q, k, v)) = split_roped(&qkv, heads, rope, pos) else {
        return reference::attend_qkv(qkv, heads, rope, pos, append);
    };
    let (nh, hs) = (heads.n_head, heads.head_size);
    let t = qkv.dims()[1];
    let dev = qkv.device();
    let (k_all, v_all) = append(k, v);
    let (kt, vt) = (prim(&k_all), prim(&v_all));
    if let (Some(keys), Some(values)) = (strided(&kt), strided(&vt)) {
        let mut y = vec![0f32; t * nh * hs];
        attend(&q, &keys, &values, heads, t, pos, &mut y, nh * hs, hs);
        return Tensor::from_data(TensorData::new(y, [1, t, nh * hs]), &dev);
    }
    // (A cache the kernel cannot read in place: the burn-op attention on the same queries.)
    let q = Tensor::from_data(TensorData::new(q, [1, nh, t, hs]), &dev);
    let spec = AttentionSpec {
        scale: heads.scale,
        softcap: heads.softcap,
        pos,
        window: heads.window,
    };
    reference::attention(q, k_all, v_all, spec)
        .swap_dims(1, 2)
        .reshape([1, t, nh * hs])
}

/// The queries `[nh, t, hs]` (host) and the new keys and values `[1, nkv, t, hs]` of the fused
/// projection `qkv` (`[1, t, (nh + 2·nkv)·hs]`), RoPE applied to queries and keys; `None` when
/// it is not one sequence of contiguous f32 or the shapes or tables disagree.
#[allow(clippy::type_complexity)]
fn split_roped(
    qkv: &Tensor<Flex, 3>,
    heads: Heads,
    rope: &RopeTables<Flex>,
    pos: usize,
) -> Option<(Vec<f32>, Tensor<Flex, 4>, Tensor<Flex, 4>)> {
    let Heads {
        n_head: nh,
        n_kv: nkv,
        head_size: hs,
        ..
    } = heads;
    let [b, t, width] = qkv.dims();
    if b != 1 || width != (nh + 2 * nkv) * hs || nkv == 0 || nh % nkv != 0 {
        return None;
    }
    let n = rope.n;
    let (cos_t, sin_t) = (prim(&rope.cos), prim(&rope.sin));
    let (cos, sin) = (f32s(&cos_t)?, f32s(&sin_t)?);
    if n > hs || !n.is_multiple_of(2) || n > MAX_ROTARY || cos.len() < (pos + t) * n {
        return None;
    }
    let qkv_t = prim(qkv);
    let x = f32s(&qkv_t)?;
    if x.len() != t * width {
        return None;
    }
    // Queries `[nh, t, hs]`, new keys and values `[nkv, t, hs]`; RoPE on queries and keys.
    let mut q = vec![0f32; nh * t * hs];
    let mut k = vec![0f32; nkv * t * hs];
    let mut v = vec![0f32; nkv * t * hs];
    for i in 0..t {
        let row = &x[i * width..(i + 1) * width];
        let (c, s) = (&cos[(pos + i) * n..][..n], &sin[(pos + i) * n..][..n]);
        for h in 0..nh {
            let dst = &mut q[(h * t + i) * hs..][..hs];
            dst.copy_from_slice(&row[h * hs..][..hs]);
            rotate(dst, c, s);
        }
        for g in 0..nkv {
            let dst = &mut k[(g * t + i) * hs..][..hs];
            dst.copy_from_slice(&row[(nh + g) * hs..][..hs]);
            rotate(dst, c, s);
            v[(g * t + i) * hs..][..hs].copy_from_slice(&row[(nh + nkv + g) * hs..][..hs]);
        }
    }
    let dev = qkv.device();
    Some((
        q,
        Tensor::from_data(TensorData::new(k, [1, nkv, t, hs]), &dev),
        Tensor::from_data(TensorData::new(v, [1, nkv, t, hs]), &dev),
    ))
}

/// `softmax(mask(cap(q·kᵀ·scale)))·v` for `q` `[1, nh, t, hs]` at positions `pos..pos + t` and
/// `k`, `v` `[1, nkv, pos + t, hs]` (any strides); `None` where the tensors are not f32 or the
/// shapes disagree.
pub(crate) fn try_attention(
    q: &Tensor<Flex, 4>,
    k: &Tensor<Flex, 4>,
    v: &Tensor<Flex, 4>,
    spec: AttentionSpec,
) -> Option<Tensor<Flex, 4>> {
    let AttentionSpec {
        scale,
        softcap,
        pos,
        window,
    } = spec;
    let [b, nh, t, hs] = q.dims();
    let [bk, nkv, s, hsk] = k.dims();
    if b != 1 || bk != 1 || hsk != hs || v.dims() != k.dims() || nkv == 0 || nh % nkv != 0 {
        return None;
    }
    if s != pos + t {
        return None;
    }
    let (kt, vt) = (prim(k), prim(v));
    let (keys, values) = (strided(&kt)?, strided(&vt)?);
    let qt = prim(q);
    let owned;
    let qd = match f32s(&qt) {
        Some(d) if d.len() == nh * t * hs => d,
        _ => {
            owned = q.clone().into_data().into_vec::<f32>().ok()?;
            &owned[..]
        }
    };
    let heads = Heads {
        n_head: nh,
        n_kv: nkv,
        head_size: hs,
        scale,
        softcap,
        window,
    };
    let mut y = vec![0f32; nh * t * hs];
    attend(qd, &keys, &values, heads, t, pos, &mut y, hs, t * hs);
    Some(Tensor::from_data(
        TensorData::new(y, [1, nh, t, hs]),
        &q.device(),
    ))
}

/// [`crate::backend::ModelOps::rope`] in one pass on the host: the burn-op form runs eight
/// strided element-wise ops per call. The same arithmetic (a product each, then their sum), so
/// the results are identical. `None` where the tables or shapes do not fit the host kernel.
pub(crate) fn rope(
    x: &Tensor<Flex, 4>,
    tables: &RopeTables<Flex>,
    start: usize,
) -> Option<Tensor<Flex, 4>> {
    let (cos_t, sin_t) = (prim(&tables.cos), prim(&tables.sin));
    let (cos, sin) = (f32s(&cos_t)?, f32s(&sin_t)?);
    let [b, h, t, hs] = x.dims();
    let n = tables.n;
    if n > hs
        || !n.is_multiple_of(2)
        || n > MAX_ROTARY
        || cos.len() < (start + t) * n
        || sin.len() != cos.len()
    {
        return None;
    }
    let mut v = x.clone().into_data().into_vec::<f32>().ok()?;
    // Rows of `v` are `[b, h, t]` in order: row `r` is position `start + r % t`.
    for (r, row) in v.chunks_exact_mut(hs).enumerate() {
        let p = start + r % t;
        rotate(row, &cos[p * n..(p + 1) * n], &sin[p * n..(p + 1) * n]);
    }
    Some(Tensor::from_data(
        TensorData::new(v, [b, h, t, hs]),
        &x.device(),
    ))
}

fn strided(t: &burn_flex::FlexTensor) -> Option<Strided<'_>> {
    if t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    let l = t.layout();
    let st = l.strides();
    let shape = l.shape();
    if st.len() != 4 || st[3] != 1 || st[..3].iter().any(|&x| x < 0) {
        return None;
    }
    let data: &[f32] = t.storage::<f32>();
    let offset = l.start_offset();
    // The last element must lie inside the storage (so `row` cannot go out of bounds).
    let last = offset
        + (0..4)
            .map(|d| shape[d].saturating_sub(1) * st[d] as usize)
            .sum::<usize>();
    if shape.iter().any(|&d| d == 0) || last >= data.len() {
        return None;
    }
    Some(Strided::new(
        data,
        offset,
        [st[0] as usize, st[1] as usize, st[2] as usize],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    type F = crate::backend::Flex;

    /// Against a double-precision reference: GQA and multi-query, a cache larger than its used
    /// part (strided views), decode and prefill positions, sliding window, soft-capping.
    #[test]
    fn matches_a_double_precision_reference() {
        let mut s = 5u32;
        let mut rnd = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // Fewer than eight queries take the few-queries path, more the blocked one (several
        // blocks of sixteen, head sizes with and without a tail past sixteen).
        for (nh, nkv, hs, t, pos, window, softcap) in [
            (4, 2, 8, 5, 0, None, None),
            (4, 1, 8, 3, 6, Some(4), Some(5.0)),
            (2, 2, 8, 1, 9, None, None),
            (6, 3, 8, 7, 2, Some(3), None),
            (4, 2, 8, 20, 0, None, None),
            (3, 1, 24, 37, 5, None, Some(5.0)),
            (2, 2, 32, 33, 3, Some(10), None),
            (2, 1, 16, 8, 40, Some(9), None),
            // Decoding over several runs of keys (one task each), a window across their edge.
            (6, 2, 16, 1, 300, None, None),
            (4, 1, 8, 3, 260, Some(200), Some(5.0)),
            (3, 3, 24, 2, 255, Some(130), None),
            (4, 2, 8, 7, 127, None, None),
        ] {
            let (cap, sl) = ((pos + t).max(96), pos + t);
            let q: Vec<f32> = (0..nh * t * hs).map(|_| rnd() * 4.0).collect();
            let kc: Vec<f32> = (0..nkv * cap * hs).map(|_| rnd() * 4.0).collect();
            let vc: Vec<f32> = (0..nkv * cap * hs).map(|_| rnd()).collect();
            let dev = Default::default();
            let qt = Tensor::<F, 4>::from_data(TensorData::new(q.clone(), [1, nh, t, hs]), &dev);
            let cache = |d: &Vec<f32>| {
                Tensor::<F, 4>::from_data(TensorData::new(d.clone(), [1, nkv, cap, hs]), &dev)
                    .narrow(2, 0, sl)
            };
            let scale = 1.0 / (hs as f64).sqrt();
            let y = try_attention(
                &qt,
                &cache(&kc),
                &cache(&vc),
                AttentionSpec {
                    scale,
                    softcap,
                    pos,
                    window,
                },
            )
            .expect("flex takes the host path")
            .into_data()
            .into_vec::<f32>()
            .unwrap();
            for h in 0..nh {
                let g = h / (nh / nkv);
                for i in 0..t {
                    let abs = pos + i;
                    let lo = window.map_or(0, |w: usize| (abs + 1).saturating_sub(w));
                    let sc: Vec<f64> = (lo..=abs)
                        .map(|j| {
                            let d: f64 = (0..hs)
                                .map(|e| {
                                    q[(h * t + i) * hs + e] as f64
                                        * kc[(g * cap + j) * hs + e] as f64
                                })
                                .sum::<f64>()
                                * scale;
                            softcap.map_or(d, |c| (d / c).tanh() * c)
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for e in 0..hs {
                        let want: f64 = (lo..=abs)
                            .zip(&sc)
                            .map(|(j, x)| (x - m).exp() / z * vc[(g * cap + j) * hs + e] as f64)
                            .sum();
                        let got = y[(h * t + i) * hs + e] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "nh {nh} nkv {nkv} t {t} pos {pos} h {h} i {i} e {e}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod simd_tests {
    use super::*;
    type F = crate::backend::Flex;

    /// Decoding: the register kernels give the plain loops' bits (group sizes past four heads,
    /// head sizes of one to eight chunks, runs of keys with and without a partial block of
    /// sixteen, windows and soft-capping, a cache larger than its used part).
    #[test]
    fn register_kernels_match_the_plain_loops_bit_for_bit() {
        if !crate::kernels::attention::simd::available() {
            return;
        }
        let mut s = 11u32;
        let mut rnd = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let dev = Default::default();
        for (nh, nkv, hs) in [
            (9, 3, 64),
            (8, 2, 80),
            (4, 1, 128),
            (10, 2, 16),
            (16, 2, 48),
        ] {
            for (t, pos, window, softcap) in [
                (1, 0, None, None),
                (1, 14, None, None),
                (1, 15, None, Some(30.0)),
                (2, 31, None, None),
                (1, 127, Some(50), None),
                (3, 200, None, None),
                (1, 300, Some(140), Some(20.0)),
            ] {
                let cap = pos + t + 5;
                let q: Vec<f32> = (0..nh * t * hs).map(|_| rnd() * 3.0).collect();
                let cache = |scale: f32, rnd: &mut dyn FnMut() -> f32| {
                    let d: Vec<f32> = (0..nkv * cap * hs).map(|_| rnd() * scale).collect();
                    Tensor::<F, 4>::from_data(TensorData::new(d, [1, nkv, cap, hs]), &dev)
                };
                let (kc, vc) = (cache(3.0, &mut rnd), cache(1.0, &mut rnd));
                let (kf, vf) = (
                    crate::backend::flex::prim(&kc),
                    crate::backend::flex::prim(&vc),
                );
                let (k, v) = (strided(&kf).unwrap(), strided(&vf).unwrap());
                let heads = Heads {
                    n_head: nh,
                    n_kv: nkv,
                    head_size: hs,
                    scale: 1.0 / (hs as f64).sqrt(),
                    softcap,
                    window,
                };
                let run = |plain: bool| {
                    use std::sync::atomic::Ordering::Relaxed;
                    crate::kernels::attention::FORCE_PLAIN.store(plain, Relaxed);
                    let mut y = vec![0f32; t * nh * hs];
                    attend(&q, &k, &v, heads, t, pos, &mut y, nh * hs, hs);
                    crate::kernels::attention::FORCE_PLAIN.store(false, Relaxed);
                    y.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(
                    run(false),
                    run(true),
                    "nh {nh} nkv {nkv} hs {hs} t {t} pos {pos}"
                );
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    #[test]
    #[ignore]
    fn attend_speed() {
        type F = crate::backend::Flex;
        let (nh, nkv, hs, t) = (9, 3, 64, 128);
        let dev = Default::default();
        let q: Vec<f32> = (0..nh * t * hs).map(|i| (i % 13) as f32 * 0.01).collect();
        let kc = Tensor::<F, 4>::from_data(
            TensorData::new(
                (0..nkv * t * hs)
                    .map(|i| (i % 11) as f32 * 0.01)
                    .collect::<Vec<_>>(),
                [1, nkv, t, hs],
            ),
            &dev,
        );
        let (kt, vt) = (
            crate::backend::flex::prim(&kc),
            crate::backend::flex::prim(&kc),
        );
        let (k, v) = (strided(&kt).unwrap(), strided(&vt).unwrap());
        let heads = Heads {
            n_head: nh,
            n_kv: nkv,
            head_size: hs,
            scale: 0.125,
            softcap: None,
            window: None,
        };
        let mut y = vec![0f32; t * nh * hs];
        let reps = 300;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            attend(&q, &k, &v, heads, t, 0, &mut y, nh * hs, hs);
        }
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "attend t={t}: {:.3} ms/layer, {:.1} ms per 30 layers",
            s * 1e3,
            s * 30e3
        );
        // Decoding one token after `ctx - 1` others: 30 layers' caches (f32), read from memory
        // as in a real decode step.
        for ctx in [64, 256, 1024, 2048] {
            let caches: Vec<Tensor<F, 4>> = (0..30)
                .map(|l| {
                    Tensor::from_data(
                        TensorData::new(
                            (0..nkv * ctx * hs)
                                .map(|i| ((i + l) % 11) as f32 * 0.01)
                                .collect::<Vec<_>>(),
                            [1, nkv, ctx, hs],
                        ),
                        &dev,
                    )
                })
                .collect();
            let flexes: Vec<_> = caches.iter().map(crate::backend::flex::prim).collect();
            let views: Vec<_> = flexes.iter().map(|f| strided(f).unwrap()).collect();
            let q1 = &q[..nh * hs];
            let mut y = vec![0f32; nh * hs];
            let reps = 20;
            // On a pool worker, as in a forward pass; the plain loops and the register kernels
            // in alternating rounds (the same bits), with the caches warm (all 30 layers fit in
            // a large L3) and cold (13 MB of other data read before each layer, as a bf16
            // decode streams its weights between two attentions).
            use std::sync::atomic::Ordering::Relaxed;
            let other = vec![1f32; 13 << 18];
            let mut sink = 0f32;
            let mut times = [[0f64; 2]; 2];
            for round in 0..6 {
                let plain = round % 2 == 0;
                crate::kernels::attention::FORCE_PLAIN.store(plain, Relaxed);
                for (cold, time) in times[plain as usize].iter_mut().enumerate() {
                    *time += <F as crate::backend::ops::ModelOps>::run(|| {
                        let mut spent = 0f64;
                        for _ in 0..reps {
                            for v in &views {
                                if cold == 1 {
                                    sink += other.iter().step_by(16).sum::<f32>();
                                }
                                let t0 = std::time::Instant::now();
                                attend(q1, v, v, heads, 1, ctx - 1, &mut y, nh * hs, hs);
                                spent += t0.elapsed().as_secs_f64();
                            }
                        }
                        spent / reps as f64 / 3.0
                    });
                }
            }
            crate::kernels::attention::FORCE_PLAIN.store(false, Relaxed);
            println!(
                "decode at context {ctx}, ms per 30 layers: warm {:.2} (plain loops {:.2}), \
                 cold {:.2} (plain loops {:.2}) [{sink}]",
                times[0][0] * 1e3,
                times[1][0] * 1e3,
                times[0][1] * 1e3,
                times[1][1] * 1e3,
            );
        }
    }
}
