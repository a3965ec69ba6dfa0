//! GGML's 8- and 4-bit weight blocks (Q8_0, Q4_0): 32 consecutive weights along a row's input
//! dimension with one f16 scale, quantized exactly as ggml's reference quantizers
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`) and the `gguf` package do, so the bytes
//! equal what llama.cpp writes for the same weights; and their dequantization.
//! `quant/dot.rs` multiplies f32 activations by rows of blocks (decoding), `quant/many.rs`
//! several rows at once (batched decoding, prefill).

pub(crate) mod dot;
pub(crate) mod many;

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Weights per block.
pub const QK: usize = 32;

/// 32 weights as `d · q`, `q` signed 8-bit (34 bytes, ggml's `block_q8_0`).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// 32 weights as `d · (q − 8)`, `q` 4-bit: byte `j` holds weight `j` in its low nibble and
/// weight `j + 16` in its high nibble (18 bytes, ggml's `block_q4_0`).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// A block type: how to make one from 32 weights and read them back.
pub trait Block: Pod + Send + Sync + 'static {
    /// ggml's name (`q8_0`; the tests' fixture files are named by it).
    #[cfg_attr(not(test), allow(dead_code))]
    const NAME: &'static str;
    /// The block of `x` (32 finite weights).
    fn quantize(x: &[f32; QK]) -> Self;
    /// Its 32 weights.
    fn dequantize(&self, out: &mut [f32; QK]);
    /// Its scale `d`.
    fn scale(&self) -> f32;
}

impl Block for BlockQ8_0 {
    const NAME: &'static str = "q8_0";

    fn quantize(x: &[f32; QK]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        // `1 / d` from the f32 scale, not the rounded f16 one, as ggml does.
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, v) in qs.iter_mut().zip(x) {
            // `round` is half away from zero, as C's `roundf`; |v · id| ≤ 127 (up to rounding
            // of `id`, which the saturating cast absorbs).
            *q = (v * id).round() as i8;
        }
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
}

impl Block for BlockQ4_0 {
    const NAME: &'static str = "q4_0";

    fn quantize(x: &[f32; QK]) -> Self {
        // The value of largest magnitude with its sign (the first of equals), so that it maps
        // onto −8 exactly.
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // Truncation toward zero of `v · id + 8.5` (C's cast), at most 15.
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        let mut qs = [0u8; QK / 2];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(x[j]) | (q(x[j + QK / 2]) << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
            out[j + QK / 2] = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }

    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
}

/// `x` (a whole number of blocks, finite) as blocks, in parallel for large inputs.
///
/// # Panics
/// When `x.len()` is not `QK · out.len()` (callers size both from one shape).
pub fn quantize<B: Block>(x: &[f32], out: &mut [B]) {
    use rayon::prelude::*;
    assert_eq!(
        x.len(),
        out.len() * QK,
        "{} values for {} blocks",
        x.len(),
        out.len()
    );
    const PER_TASK: usize = 4096;
    out.par_chunks_mut(PER_TASK)
        .zip(x.par_chunks(PER_TASK * QK))
        .for_each(|(o, x)| {
            for (b, x) in o.iter_mut().zip(x.chunks_exact(QK)) {
                let x: &[f32; QK] = x.try_into().unwrap_or(&[0.0; QK]);
                *b = B::quantize(x);
            }
        });
}

/// The values of `blocks` (`QK` per block).
///
/// # Panics
/// When `out.len()` is not `QK · blocks.len()`.
pub fn dequantize<B: Block>(blocks: &[B], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        blocks.len() * QK,
        "{} values for {} blocks",
        out.len(),
        blocks.len()
    );
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        if let Ok(o) = <&mut [f32; QK]>::try_from(o) {
            b.dequantize(o);
        }
    }
}

#[cfg(test)]
mod tests;
