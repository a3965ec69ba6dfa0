//! Linear weights held as GGML blocks (`--weight-dtype q8_0 | q4_0`): quantized at load from
//! the checkpoint's values along each output row (the input dimension), exactly as llama.cpp
//! quantizes them ([`crate::kernels::quant`]). Held as the blocks' bytes where the backend has
//! block kernels (burn-flex); elsewhere as the dequantized values, the numbers the block
//! kernels multiply by, so every backend computes with the same weights.

use burn::prelude::*;

use super::precision::WeightDtype;
use crate::backend::ModelBackend;
use crate::checkpoint::Values;
use crate::kernels::panels::Layout;
use crate::kernels::quant::{dequantize, quantize, Block, BlockQ4_0, BlockQ8_0, QK};

/// The `[rows, cols]` weight stacked from `parts` quantized to `precision`'s blocks, held as the
/// backend holds them, with the layout it is held in; `None` where it cannot be quantized —
/// `cols` not a whole number of blocks, or a block whose scale does not fit in f16 — and the
/// caller holds it unquantized.
pub(crate) fn held<B: ModelBackend>(
    parts: &[Values<'_>],
    rows: usize,
    cols: usize,
    precision: WeightDtype,
    device: &B::Device,
) -> Option<(Tensor<B, 2>, Layout)> {
    match precision {
        WeightDtype::Q8_0 => held_as::<B, BlockQ8_0>(parts, rows, cols, Layout::Q8_0, device),
        WeightDtype::Q4_0 => held_as::<B, BlockQ4_0>(parts, rows, cols, Layout::Q4_0, device),
        _ => None,
    }
}

fn held_as<B: ModelBackend, Bk: Block>(
    parts: &[Values<'_>],
    rows: usize,
    cols: usize,
    layout: Layout,
    device: &B::Device,
) -> Option<(Tensor<B, 2>, Layout)> {
    let blocks = blocks_of::<Bk>(parts, rows, cols)?;
    let per_row = cols / QK * std::mem::size_of::<Bk>();
    let bytes: Vec<u8> = bytemuck::cast_slice(&blocks).to_vec();
    if let Some(t) = B::hold_blocks(bytes, [rows, per_row], layout, device) {
        return Some((t, layout));
    }
    // No block kernels: the dequantized values, held as f32 weights are on this backend.
    let mut values = vec![0f32; rows * cols];
    dequantize(&blocks, &mut values);
    let dense = if B::holds_panels() {
        Layout::Panels
    } else {
        Layout::Rows
    };
    let t = super::precision::held_transposed::<B>(
        &[Values::F32(&values)],
        rows,
        cols,
        WeightDtype::F32,
        dense,
        device,
    );
    Some((t, dense))
}

/// The blocks of `parts` stacked by rows (`[rows, cols]`), or `None` (see [`held`]).
fn blocks_of<Bk: Block>(parts: &[Values<'_>], rows: usize, cols: usize) -> Option<Vec<Bk>> {
    if cols == 0
        || !cols.is_multiple_of(QK)
        || parts.iter().map(|p| p.len()).sum::<usize>() != rows * cols
    {
        return None;
    }
    let mut blocks = vec![Bk::zeroed(); rows * cols / QK];
    let mut at = 0;
    for p in parts {
        let n = p.len() / QK;
        match p {
            Values::F32(d) => quantize(d, &mut blocks[at..at + n]),
            other => quantize(&other.to_f32_vec(), &mut blocks[at..at + n]),
        }
        at += n;
    }
    blocks
        .iter()
        .all(|b| b.scale().is_finite())
        .then_some(blocks)
}

/// A merged `[k, n]` f32 weight (row-major, the layout the model multiplies by) requantized to
/// `layout`'s blocks and held by the backend; `None` where it cannot be (see [`held`]).
pub(crate) fn requantized<B: ModelBackend>(
    rows: &Tensor<B, 2>,
    layout: Layout,
) -> Option<Tensor<B, 2>> {
    let [k, n] = rows.dims();
    let values = crate::backend::held::host_f32(rows);
    let stored = crate::kernels::transpose::transpose(&values, k, n);
    let parts = [Values::F32(&stored)];
    let precision = match layout {
        Layout::Q8_0 => WeightDtype::Q8_0,
        Layout::Q4_0 => WeightDtype::Q4_0,
        Layout::Rows | Layout::Panels => return None,
    };
    match held::<B>(&parts, n, k, precision, &rows.device()) {
        Some((t, l)) if l == layout => Some(t),
        _ => None,
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::backend::Flex;

    /// On burn-flex a quantizable weight is held as its blocks (the bytes, in the block
    /// layout), one whose input is not whole blocks is not, and the held blocks read back as the
    /// dequantized values.
    #[test]
    fn flex_holds_the_blocks_themselves() {
        let (rows, cols) = (40, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let dev = Default::default();
        for (dtype, layout, size) in [
            (WeightDtype::Q8_0, Layout::Q8_0, 34),
            (WeightDtype::Q4_0, Layout::Q4_0, 18),
        ] {
            let (t, l) = held::<Flex>(&[Values::F32(&w)], rows, cols, dtype, &dev).unwrap();
            assert_eq!(l, layout);
            assert_eq!(t.dtype(), burn::tensor::DType::U8);
            assert_eq!(t.dims(), [rows, cols / QK * size]);
            let shape = crate::kernels::panels::WeightShape {
                k: cols,
                n: rows,
                layout,
            };
            let back =
                crate::backend::held::host_f32(&crate::backend::held::blocks_rows(&t, shape));
            let mut want = vec![0f32; rows * cols];
            match layout {
                Layout::Q8_0 => dequantize(
                    &blocks_of::<BlockQ8_0>(&[Values::F32(&w)], rows, cols).unwrap(),
                    &mut want,
                ),
                _ => dequantize(
                    &blocks_of::<BlockQ4_0>(&[Values::F32(&w)], rows, cols).unwrap(),
                    &mut want,
                ),
            }
            assert_eq!(
                back,
                crate::kernels::transpose::transpose(&want, rows, cols)
            );
        }
        assert!(held::<Flex>(
            &[Values::F32(&w[..rows * 48])],
            rows,
            48,
            WeightDtype::Q8_0,
            &dev
        )
        .is_none());
    }
}
