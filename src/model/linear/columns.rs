//! Columns of a held weight as f32 rows: the embedding lookup of a model whose output head
//! serves as its embedding (a gather from panels, read in place where the backend can; burn's
//! `select` on rows).

use burn::prelude::*;

use crate::backend::held::{as_f32, host_f32};
use crate::backend::ModelBackend;
use crate::kernels::panels::{Layout, WeightShape};
use crate::kernels::weight::{Held, Weight};

/// Columns `ids` (each below `shape.n`) of a weight held in `held` as `shape` says, as f32 rows
/// `[ids.len(), shape.k]`: a gather from panels on the host, burn's `select` on rows (any
/// backend).
pub(crate) fn columns<B: ModelBackend>(
    held: &Tensor<B, 2>,
    shape: WeightShape,
    ids: &[u32],
) -> Tensor<B, 2> {
    match shape.layout {
        Layout::Panels | Layout::Q8_0 | Layout::Q4_0 => columns_of(held, shape, ids),
        Layout::Rows => {
            let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
            let idx =
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [ids.len()]), &held.device());
            as_f32(&held.clone().select(1, idx).transpose())
        }
    }
}

/// Columns `ids` of a `[k, n]` weight held in `t` as `shape` says, as f32 rows `[ids.len(), k]`
/// (the embedding lookup of a model whose head serves as its embedding).
pub(crate) fn columns_of<B: ModelBackend>(
    t: &Tensor<B, 2>,
    shape: WeightShape,
    ids: &[u32],
) -> Tensor<B, 2> {
    fn gather<W: Weight>(w: &[W], shape: WeightShape, ids: &[u32], out: &mut [f32]) {
        for (&j, row) in ids.iter().zip(out.chunks_mut(shape.k)) {
            for (i, o) in row.iter_mut().enumerate() {
                *o = w[shape.at(i, j as usize)].to_f32();
            }
        }
    }
    let k = shape.k;
    if k == 0 {
        return Tensor::from_data(
            TensorData::new(Vec::<f32>::new(), [ids.len(), 0]),
            &t.device(),
        );
    }
    let mut out = vec![0f32; ids.len() * k];
    // In place where the backend can read the held weight (no f32 copy of a whole embedding).
    let read = B::read_held(t, shape.layout, |h| {
        if h.len() != shape.len() {
            return false;
        }
        match h {
            Held::F32(w) => gather(w, shape, ids, &mut out),
            Held::Bf16(w) => gather(w, shape, ids, &mut out),
            Held::F16(w) => gather(w, shape, ids, &mut out),
            // Column `j` of the `[k, n]` weight is block row `j`.
            Held::Q8_0(w) => gather_blocks(w, k, ids, &mut out),
            Held::Q4_0(w) => gather_blocks(w, k, ids, &mut out),
        }
        true
    });
    if read != Some(true) {
        if shape.layout.is_blocks() {
            let rows = crate::backend::held::blocks_rows(t, shape);
            gather(
                &host_f32(&rows),
                WeightShape::rows([k, shape.n]),
                ids,
                &mut out,
            );
        } else {
            gather(&host_f32(t), shape, ids, &mut out);
        }
    }
    Tensor::from_data(TensorData::new(out, [ids.len(), k]), &t.device())
}

/// Rows `ids` of `n` rows of blocks (`k` values each) as f32 rows `[ids.len(), k]`.
fn gather_blocks<Bk: crate::kernels::quant::Block>(
    w: &[Bk],
    k: usize,
    ids: &[u32],
    out: &mut [f32],
) {
    let per = k / crate::kernels::quant::QK;
    for (&j, row) in ids.iter().zip(out.chunks_mut(k)) {
        match w.get(j as usize * per..(j as usize + 1) * per) {
            Some(blocks) => crate::kernels::quant::dequantize(blocks, row),
            None => row.fill(f32::NAN),
        }
    }
}
