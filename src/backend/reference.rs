//! The default forms of [`ModelOps`]' operations, in plain burn ops: what every backend runs,
//! and what burn-flex falls back to where a host kernel does not apply. Each is whole in burn
//! ops (none calls back into the trait).
//!
//! [`ModelOps`]: super::ops::ModelOps

use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, silu, softmax};
use burn::tensor::IndexingUpdateOp;

use super::held::{as_f32, rows_tensor};
use super::operands::{AttentionSpec, Gate, Heads, LinearOp, RopeTables};
use crate::kernels::panels::Layout;

/// The weight of `op` as f32 `[k, n]`, row-major.
fn weight_f32<B: Backend>(op: &LinearOp<'_, B>) -> Tensor<B, 2> {
    let rows = match op.shape.layout {
        Layout::Rows => op.weight.clone(),
        Layout::Panels => rows_tensor(op.weight, op.shape.k, op.shape.n),
        Layout::Q8_0 | Layout::Q4_0 => super::held::blocks_rows(op.weight, op.shape),
    };
    as_f32(&rows)
}

/// [`ModelOps::linear_layer`] in burn ops: the weight product, the bias, each term (on its
/// rows), then the affine correction.
pub(crate) fn linear<B: Backend>(x: Tensor<B, 2>, op: &LinearOp<'_, B>) -> Tensor<B, 2> {
    let mut y = x.clone().matmul(weight_f32(op));
    if let Some(bias) = op.bias {
        y = y + bias.clone().unsqueeze_dim::<2>(0);
    }
    for t in &op.terms {
        let (a, b) = (as_f32(t.a), as_f32(t.b));
        y = match t.rows {
            None => y + x.clone().matmul(a).matmul(b) * t.scale,
            Some(idx) => {
                let ids: Vec<i64> = idx.iter().map(|&r| r as i64).collect();
                let ids =
                    Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [idx.len()]), &x.device());
                let d = x.clone().select(0, ids.clone()).matmul(a);
                let d = d.matmul(b) * t.scale;
                y.select_assign(0, ids, d, IndexingUpdateOp::Add)
            }
        };
    }
    if let Some(af) = &op.affine {
        y = (y + af.bias.clone().unsqueeze_dim::<2>(0)) * af.scale.clone().unsqueeze_dim::<2>(0);
    }
    y
}

/// [`ModelOps::gated`] from two [`linear`]s and burn's activations.
pub(crate) fn gated<B: Backend>(
    x: Tensor<B, 2>,
    gate: &LinearOp<'_, B>,
    up: &LinearOp<'_, B>,
    act: Gate,
) -> Tensor<B, 2> {
    let a = linear(x.clone(), gate);
    let b = linear(x, up);
    activate(a, act) * b
}

/// `act(a)` for a gate projection's output.
pub(crate) fn activate<B: Backend, const D: usize>(a: Tensor<B, D>, act: Gate) -> Tensor<B, D> {
    match act {
        Gate::Silu => silu(a),
        Gate::Gelu => gelu(a),
        Gate::GeluTanh => gelu_approximate(a),
    }
}

/// [`ModelOps::rope`] in burn ops: `x·cos + rotate_half(x)·sin` on the rotated dimensions.
pub(crate) fn rope<B: Backend>(
    x: Tensor<B, 4>,
    tables: &RopeTables<B>,
    start: usize,
) -> Tensor<B, 4> {
    let n = tables.n;
    let [_, _, t, hs] = x.dims();
    let cos = tables
        .cos
        .clone()
        .narrow(0, start, t)
        .unsqueeze_dims::<4>(&[0, 1]);
    let sin = tables
        .sin
        .clone()
        .narrow(0, start, t)
        .unsqueeze_dims::<4>(&[0, 1]);
    let rot = x.clone().narrow(3, 0, n);
    let x1 = rot.clone().narrow(3, 0, n / 2);
    let x2 = rot.clone().narrow(3, n / 2, n / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let roped = rot * cos + rotated * sin;
    if n == hs {
        roped
    } else {
        Tensor::cat(vec![roped, x.narrow(3, n, hs - n)], 3)
    }
}

/// Scaled (and, for Gemma 2, soft-capped) scores `q·kᵀ`.
pub(crate) fn scores<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    scale: f64,
    softcap: Option<f64>,
) -> Tensor<B, 4> {
    let s = q.matmul(k.swap_dims(2, 3)) * scale;
    match softcap {
        Some(c) => (s / c).tanh() * c,
        None => s,
    }
}

/// [`ModelOps::causal_attention`] in burn ops: grouped-query without copying K/V per query
/// head — the `rep` query heads that share a K/V head become `rep · t` rows against that head.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    spec: AttentionSpec,
) -> Tensor<B, 4> {
    let [b, nh, t, hs] = q.dims();
    let nkv = k.dims()[1].max(1);
    let rep = nh / nkv;
    let qg = if rep > 1 {
        q.reshape([b, nkv, rep * t, hs])
    } else {
        q
    };
    let mut scores = scores(qg, k, spec.scale, spec.softcap); // [b, nkv, rep·t, s]
    if let Some(mask) = mask::<B>(spec.pos, t, spec.window, &scores.device()) {
        scores = scores
            + if rep > 1 {
                mask.repeat_dim(2, rep)
            } else {
                mask
            };
    }
    softmax(scores, 3).matmul(v).reshape([b, nh, t, hs])
}

/// Additive mask `[1, 1, t, pos + t]` (0 or -inf), or `None` when nothing is masked.
fn mask<B: Backend>(
    pos: usize,
    t: usize,
    window: Option<usize>,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
    let s = pos + t;
    let window = window.filter(|&w| w < s);
    if t == 1 && window.is_none() {
        return None;
    }
    let mut m = vec![0f32; t * s];
    for i in 0..t {
        let abs = pos + i;
        for j in 0..s {
            let future = j > abs;
            let too_old = window.is_some_and(|w| j + w <= abs);
            if future || too_old {
                m[i * s + j] = f32::NEG_INFINITY;
            }
        }
    }
    Some(Tensor::<B, 2>::from_data(TensorData::new(m, [t, s]), device).unsqueeze_dims::<4>(&[0, 1]))
}

/// [`ModelOps::attend_qkv`] from [`rope`] and [`attention`]: the heads split out of the fused
/// projection, RoPE, the cache, the attention, the heads put back side by side.
pub(crate) fn attend_qkv<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: Heads,
    rope: &RopeTables<B>,
    pos: usize,
    append: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>),
) -> Tensor<B, 3> {
    let (nh, nkv, hs) = (heads.n_head, heads.n_kv, heads.head_size);
    let [b, t, _] = qkv.dims();
    let q = qkv.clone().narrow(2, 0, nh * hs);
    let k = qkv.clone().narrow(2, nh * hs, nkv * hs);
    let v = qkv.narrow(2, (nh + nkv) * hs, nkv * hs);
    // [b, t, heads, hs] -> [b, heads, t, hs]
    let q = q.reshape([b, t, nh, hs]).swap_dims(1, 2);
    let k = k.reshape([b, t, nkv, hs]).swap_dims(1, 2);
    let v = v.reshape([b, t, nkv, hs]).swap_dims(1, 2);
    let (q, k) = if rope.n == 0 {
        (q, k)
    } else {
        (self::rope(q, rope, pos), self::rope(k, rope, pos))
    };
    let (k, v) = append(k, v);
    let spec = AttentionSpec::of(&heads, pos);
    attention(q, k, v, spec)
        .swap_dims(1, 2)
        .reshape([b, t, nh * hs])
}

/// [`ModelOps::write_cache`] with burn's `slice_assign`.
pub(crate) fn write_cache<B: Backend>(cache: &mut Tensor<B, 4>, new: Tensor<B, 4>, pos: usize) {
    let t = new.dims()[2];
    cache.inplace(|c| c.slice_assign(burn::tensor::s![.., .., pos..pos + t, ..], new));
}
