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
    let spec = AttentionSpec::of(&heads, pos);
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
mod tests;
