//! A tensor as stored and as read: its metadata, its values borrowed as stored, a host copy in
//! f32, and the decoding of stored little-endian bytes to f32.

use safetensors::Dtype;

/// Values per piece when decoding or scanning a tensor in parallel.
pub(super) const PIECE: usize = 1 << 16;

/// Name, dtype and shape of one stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// The dtype as stored (`F32`, `F16`, `BF16`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// A tensor's values as stored, borrowed from a buffer the file was read into.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(d) => d.len(),
            Values::Bf16(d) => d.len(),
            Values::F16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values widened (exactly) to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Values::F32(d) => d.to_vec(),
            Values::Bf16(d) => d.iter().map(|x| x.to_f32()).collect(),
            Values::F16(d) => d.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Elements `range` (`None` when it lies outside).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<Self> {
        Some(match self {
            Values::F32(d) => Values::F32(d.get(range)?),
            Values::Bf16(d) => Values::Bf16(d.get(range)?),
            Values::F16(d) => Values::F16(d.get(range)?),
        })
    }
}

/// A tensor read into memory as `f32`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `bytes` (little-endian values of `dtype`) as f32: f16/bf16 widened exactly, f64 rounded.
pub(crate) fn decode(bytes: &[u8], dtype: Dtype) -> std::result::Result<Vec<f32>, String> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        Dtype::F64 => 8,
        other => {
            return Err(format!(
                "dtype {other:?} is not supported (use f32, f16 or bf16)"
            ))
        }
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(format!(
            "{} bytes is not a whole number of {dtype:?} values",
            bytes.len()
        ));
    }
    let le2 = |c: &[u8]| [c[0], c[1]];
    Ok(match dtype {
        Dtype::F32 => widen::<4>(bytes, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        Dtype::F16 => widen::<2>(bytes, |c| half::f16::from_le_bytes(le2(c)).to_f32()),
        Dtype::BF16 => widen::<2>(bytes, |c| half::bf16::from_le_bytes(le2(c)).to_f32()),
        _ => widen::<8>(bytes, |c| {
            f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
        }),
    })
}

/// `bytes` as values of `W` bytes each, through `conv`. Large tensors go into a zeroed vector
/// (fresh pages from the OS, nothing written) filled in parallel pieces: the first touch of
/// fresh memory is a large part of a load. Small ones (an adapter's factors) are collected
/// straight from the bytes: a small zeroed vector comes from the heap and is cleared first.
fn widen<const W: usize>(bytes: &[u8], conv: impl Fn(&[u8]) -> f32 + Sync) -> Vec<f32> {
    if bytes.len() / W > PIECE {
        use rayon::prelude::*;
        let mut out = vec![0f32; bytes.len() / W];
        out.par_chunks_mut(PIECE)
            .zip(bytes.par_chunks(PIECE * W))
            .for_each(|(o, b)| {
                o.iter_mut()
                    .zip(b.chunks_exact(W))
                    .for_each(|(x, c)| *x = conv(c))
            });
        return out;
    }
    bytes.chunks_exact(W).map(conv).collect()
}
