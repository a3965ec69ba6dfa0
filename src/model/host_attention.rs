//! Causal attention computed on the host when the tensors live there (burn-flex): the burn-op
//! version copies the strided views of the cache and the score tensors element by element and
//! runs a dozen ops per layer; here one pass per query head reads the cache in place.
//!
//! Same steps as [`super::attention::Attention`]'s burn path — scaled `q·kᵀ`, optional
//! soft-capping, causal (and sliding-window) mask, softmax, `p·v` — so results differ only by
//! rounding (the parity tests hold both to the reference).

use burn::prelude::*;

/// `softmax(mask(cap(q·kᵀ·scale)))·v` for `q` `[b, nh, t, hs]` at positions `pos..pos + t` and
/// `k`, `v` `[b, nkv, pos + t, hs]` (any strides), or `None` when the backend is not burn-flex.
pub fn try_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    scale: f64,
    softcap: Option<f64>,
    pos: usize,
    window: Option<usize>,
) -> Option<Tensor<B, 4>> {
    #[cfg(feature = "flex")]
    {
        use super::weight::{f32s, flex};
        let [b, nh, t, hs] = q.dims();
        let [bk, nkv, s, hsk] = k.dims();
        if bk != b || hsk != hs || v.dims() != k.dims() || nkv == 0 || nh % nkv != 0 || s != pos + t
        {
            return None;
        }
        let (kt, vt) = (flex(k)?, flex(v)?);
        let (kv_k, kv_v) = (strided(&kt)?, strided(&vt)?);
        let qt = flex(q)?;
        let owned;
        let qd = match f32s(&qt) {
            Some(d) if d.len() == b * nh * t * hs => d,
            _ => {
                owned = q.clone().into_data().into_vec::<f32>().ok()?;
                &owned[..]
            }
        };
        let rep = nh / nkv;
        let mut y = vec![0f32; b * nh * t * hs];
        let head = |(bh, out): (usize, &mut [f32])| {
            let (bi, h) = (bh / nh, bh % nh);
            let g = h / rep;
            let mut p = vec![0f32; s];
            for i in 0..t {
                let qi = &qd[(bh * t + i) * hs..][..hs];
                let abs = pos + i;
                let lo = window.map_or(0, |w| (abs + 1).saturating_sub(w));
                let scores = &mut p[lo..=abs];
                for (j, sc) in (lo..=abs).zip(scores.iter_mut()) {
                    let x = dot(qi, kv_k.row(bi, g, j, hs)) * scale as f32;
                    *sc = match softcap {
                        Some(c) => (x / c as f32).tanh() * c as f32,
                        None => x,
                    };
                }
                let m = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - m).exp();
                    sum += *sc;
                }
                let o = &mut out[i * hs..(i + 1) * hs];
                for (j, &e) in (lo..=abs).zip(scores.iter()) {
                    let pj = e / sum;
                    for (od, &vd) in o.iter_mut().zip(kv_v.row(bi, g, j, hs)) {
                        *od += pj * vd;
                    }
                }
            }
        };
        {
            use rayon::prelude::*;
            y.par_chunks_mut(t * hs).enumerate().for_each(head);
        }
        Some(Tensor::from_data(
            TensorData::new(y, [b, nh, t, hs]),
            &q.device(),
        ))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (q, k, v, scale, softcap, pos, window);
        None
    }
}

/// `q·k` with sixteen partial sums (so the compiler vectorises it).
#[cfg(feature = "flex")]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A 4-d f32 flex tensor read in place through its strides (rows along the last dim contiguous).
#[cfg(feature = "flex")]
struct Strided<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 3],
}

#[cfg(feature = "flex")]
impl Strided<'_> {
    /// Elements `[b, h, j, 0..hs]`.
    fn row(&self, b: usize, h: usize, j: usize, hs: usize) -> &[f32] {
        let at = self.offset + b * self.strides[0] + h * self.strides[1] + j * self.strides[2];
        &self.data[at..at + hs]
    }
}

#[cfg(feature = "flex")]
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
    Some(Strided {
        data,
        offset,
        strides: [st[0] as usize, st[1] as usize, st[2] as usize],
    })
}

#[cfg(all(test, feature = "flex"))]
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
        let hs = 8;
        for (nh, nkv, t, pos, window, softcap) in [
            (4, 2, 5, 0, None, None),
            (4, 1, 3, 6, Some(4), Some(5.0)),
            (2, 2, 1, 9, None, None),
            (6, 3, 7, 2, Some(3), None),
        ] {
            let (cap, sl) = (32, pos + t);
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
            let y = try_attention(&qt, &cache(&kc), &cache(&vc), scale, softcap, pos, window)
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
