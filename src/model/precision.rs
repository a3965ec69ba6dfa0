//! How the large matrices (linear weights, the embedding) are held in memory.
//!
//! Decoding reads every weight once per token, so its speed is set by the bytes held: 16-bit
//! weights decode about twice as fast as f32 on a CPU. Arithmetic stays f32 whatever is held:
//! the host kernels widen each weight as they read it (exactly: every bf16 and f16 value is an
//! f32), so a checkpoint stored in bf16 gives the same results held as bf16 as held as f32.
//! Holding an f32 checkpoint in 16 bits rounds its weights (round to nearest even), which does
//! change results; only [`WeightDtype::Auto`] (the default) never does.

use std::fmt;

use burn::prelude::*;
use burn::tensor::{DType, TensorCreationOptions};

pub(crate) use crate::backend::held::{as_f32, host_f32};
use crate::backend::ModelBackend;
use crate::error::{Error, Result};
use crate::kernels::panels::Layout;
use crate::kernels::weight::{bf16_rne, bf16_slice, f16_slice, Held};

/// Held precision of the weight matrices (norms, biases and adapters always stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum WeightDtype {
    /// The checkpoint's own dtype when every stored matrix is bf16 (or every one f16) and the
    /// backend has 16-bit kernels (flex); f32 otherwise. Never rounds.
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
    /// GGML Q8_0 blocks (32 weights, one f16 scale, 8-bit codes: 8.5 bits per weight) for the
    /// linear weights whose input width is a whole number of blocks ([`super::blocks`]).
    Q8_0,
    /// GGML Q4_0 blocks (32 weights, one f16 scale, 4-bit codes: 4.5 bits per weight), as
    /// [`WeightDtype::Q8_0`].
    Q4_0,
}

impl WeightDtype {
    /// The spelling used by the CLI and the C API (`auto`, `f32`, `bf16`, `f16`, `q8_0`,
    /// `q4_0`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }

    /// Bytes per held weight, rounded up (`Auto` counts as 4 until resolved; Q8_0 holds 34
    /// bytes per 32 weights, Q4_0 18).
    pub fn bytes(self) -> usize {
        match self {
            Self::Bf16 | Self::F16 | Self::Q8_0 => 2,
            Self::Q4_0 => 1,
            Self::Auto | Self::F32 => 4,
        }
    }

    /// Whether weights are quantized to blocks (Q8_0, Q4_0).
    pub fn is_quantized(self) -> bool {
        matches!(self, Self::Q8_0 | Self::Q4_0)
    }

    /// What `Auto` means for a checkpoint whose matrices are stored with `stored` dtypes (as
    /// safetensors names them: `BF16`, `F16`, `F32`, ...) on a backend that can (`host16`) or
    /// cannot hold 16-bit weights. Explicit choices are returned as they are.
    pub fn resolve<'a>(self, stored: impl IntoIterator<Item = &'a str>, host16: bool) -> Self {
        if self != Self::Auto {
            return self;
        }
        if !host16 {
            return Self::F32;
        }
        let mut it = stored.into_iter().map(|d| d.to_ascii_uppercase());
        match it.next().as_deref() {
            Some("BF16") if it.all(|d| d == "BF16") => Self::Bf16,
            Some("F16") if it.all(|d| d == "F16") => Self::F16,
            _ => Self::F32,
        }
    }

    /// Rounds `v` in place to the nearest value of this precision (nothing for f32).
    pub fn round(self, v: &mut [f32]) {
        match self {
            Self::Bf16 => v
                .iter_mut()
                .for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
            Self::F16 => v
                .iter_mut()
                .for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
            // (Blocks round along a weight's rows: [`super::blocks`] does it where it knows
            // them; other tensors stay f32.)
            Self::Auto | Self::F32 | Self::Q8_0 | Self::Q4_0 => {}
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "fp16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            _ => Err(Error::invalid(
                "weight dtype",
                format!("`{s}` is not one of auto, f32, bf16, f16, q8_0, q4_0"),
            )),
        }
    }
}

/// A `[rows, cols]` weight held at `precision` on `device`: as 16-bit elements where the backend
/// keeps them ([`holds_16bit`]), otherwise as f32 (rounded to `precision`, so every backend
/// computes with the same values).
pub(crate) fn held_tensor<B: ModelBackend>(
    mut data: Vec<f32>,
    shape: [usize; 2],
    precision: WeightDtype,
    device: &B::Device,
) -> Tensor<B, 2> {
    narrowed::<B>(&data, shape, precision, device).unwrap_or_else(|| {
        precision.round(&mut data);
        Tensor::from_data(TensorData::new(data, shape), device)
    })
}

/// `data` narrowed to the 16-bit elements the backend holds at `precision`; `None` when it is
/// held as f32.
fn narrowed<B: ModelBackend>(
    data: &[f32],
    shape: [usize; 2],
    precision: WeightDtype,
    device: &B::Device,
) -> Option<Tensor<B, 2>> {
    let opts = |dt| TensorCreationOptions::<B>::new(device.clone()).with_dtype(dt);
    match precision {
        WeightDtype::Bf16 if holds_16bit::<B>(device) => Some(Tensor::from_data(
            TensorData::new(to_bf16(data), shape),
            opts(DType::BF16),
        )),
        WeightDtype::F16 if holds_16bit::<B>(device) => {
            let mut h = crate::kernels::buffer::zeroed::<half::f16>(data.len());
            f16_slice(data, &mut h);
            Some(Tensor::from_data(
                TensorData::new(h, shape),
                opts(DType::F16),
            ))
        }
        _ => None,
    }
}

/// [`held_tensor`] of values as stored (borrowed from a mapped file): 16-bit values held in
/// their own 16 bits are copied as they are and f32 values held in 16 bits are narrowed straight
/// from the file — no f32 copy of a matrix held in 16 bits on the way (an embedding is the
/// largest one); the other combinations widen to f32 first, as [`held_tensor`] takes them.
pub(crate) fn held_values<B: ModelBackend>(
    values: crate::checkpoint::Values<'_>,
    shape: [usize; 2],
    precision: WeightDtype,
    device: &B::Device,
) -> Tensor<B, 2> {
    use crate::checkpoint::Values;
    let opts = |dt| TensorCreationOptions::<B>::new(device.clone()).with_dtype(dt);
    let sixteen = holds_16bit::<B>(device);
    match (precision, values) {
        (WeightDtype::Bf16, Values::Bf16(d)) if sixteen => {
            let mut h = crate::kernels::buffer::zeroed::<half::bf16>(d.len());
            h.copy_from_slice(d);
            Tensor::from_data(TensorData::new(h, shape), opts(DType::BF16))
        }
        (WeightDtype::F16, Values::F16(d)) if sixteen => {
            let mut h = crate::kernels::buffer::zeroed::<half::f16>(d.len());
            h.copy_from_slice(d);
            Tensor::from_data(TensorData::new(h, shape), opts(DType::F16))
        }
        (_, Values::F32(d)) => narrowed::<B>(d, shape, precision, device)
            .unwrap_or_else(|| held_tensor::<B>(d.to_vec(), shape, precision, device)),
        (_, v) => held_tensor::<B>(v.to_f32_vec(), shape, precision, device),
    }
}

/// The transpose `[cols, rows]` of a row-major `[rows, cols]` weight given as `parts` stacked by
/// rows (one part, or a fused q/k/v weight's three), held at `precision` as [`held_tensor`] holds
/// it and laid out as `layout` says: row-major `[cols, rows]`, or panels
/// `[⌈rows/16⌉·cols, 16]` ([`crate::kernels::panels`]). Converted band by band or panel by panel
/// (no transposed f32 copy for 16-bit, no stacked copy of the parts).
pub(crate) fn held_transposed<B: ModelBackend>(
    parts: &[crate::checkpoint::Values<'_>],
    rows: usize,
    cols: usize,
    precision: WeightDtype,
    layout: Layout,
    device: &B::Device,
) -> Tensor<B, 2> {
    use crate::checkpoint::Values;
    fn all<'a, S>(
        parts: &[Values<'a>],
        f: impl Fn(Values<'a>) -> Option<&'a [S]>,
    ) -> Option<Vec<&'a [S]>> {
        parts.iter().map(|&v| f(v)).collect()
    }
    if let Some(p) = all(parts, |v| match v {
        Values::F32(d) => Some(d),
        _ => None,
    }) {
        return held_transposed_as::<B, _>(&p, rows, cols, precision, layout, device);
    }
    if let Some(p) = all(parts, |v| match v {
        Values::Bf16(d) => Some(d),
        _ => None,
    }) {
        return held_transposed_as::<B, _>(&p, rows, cols, precision, layout, device);
    }
    if let Some(p) = all(parts, |v| match v {
        Values::F16(d) => Some(d),
        _ => None,
    }) {
        return held_transposed_as::<B, _>(&p, rows, cols, precision, layout, device);
    }
    // Parts of different stored types: widened (exactly) to f32 first.
    let wide: Vec<Vec<f32>> = parts.iter().map(|v| v.to_f32_vec()).collect();
    let p: Vec<&[f32]> = wide.iter().map(|w| &w[..]).collect();
    held_transposed_as::<B, _>(&p, rows, cols, precision, layout, device)
}

/// The transpose of `parts` stacked by rows in `layout`, each value through `map` (see
/// [`crate::kernels::transpose::transpose_parts_map`], [`crate::kernels::panels::panels_map`]).
fn arranged<S: crate::kernels::weight::Weight, T: Copy + bytemuck::Zeroable + Send>(
    parts: &[&[S]],
    cols: usize,
    layout: Layout,
    map: impl Fn(&[f32], &mut [T]) + Sync,
) -> Vec<T> {
    match layout {
        // (Block layouts are made by `super::blocks`, never arranged here.)
        Layout::Rows | Layout::Q8_0 | Layout::Q4_0 => {
            crate::kernels::transpose::transpose_parts_map(parts, cols, map)
        }
        Layout::Panels => crate::kernels::panels::panels_map(parts, cols, map),
    }
}

fn held_transposed_as<B: ModelBackend, S: crate::kernels::weight::Weight>(
    parts: &[&[S]],
    rows: usize,
    cols: usize,
    precision: WeightDtype,
    layout: Layout,
    device: &B::Device,
) -> Tensor<B, 2> {
    use crate::kernels::panels::PANEL;
    let opts = |dt| TensorCreationOptions::<B>::new(device.clone()).with_dtype(dt);
    let shape = match layout {
        Layout::Rows | Layout::Q8_0 | Layout::Q4_0 => [cols, rows],
        Layout::Panels => [rows.div_ceil(PANEL) * cols, PANEL],
    };
    match precision {
        WeightDtype::Bf16 if holds_16bit::<B>(device) => {
            let h = arranged(parts, cols, layout, bf16_slice);
            Tensor::from_data(TensorData::new(h, shape), opts(DType::BF16))
        }
        WeightDtype::F16 if holds_16bit::<B>(device) => {
            let h = arranged(parts, cols, layout, f16_slice);
            Tensor::from_data(TensorData::new(h, shape), opts(DType::F16))
        }
        _ => {
            let wide: Option<Vec<&[f32]>> = parts
                .iter()
                .map(|p| crate::kernels::transpose::as_f32(p))
                .collect();
            let t = match (wide, layout) {
                // f32 rows: the 8×8 register transposes.
                (Some(d), Layout::Rows) => crate::kernels::transpose::transpose_parts(&d, cols),
                _ => arranged(parts, cols, layout, |a: &[f32], b: &mut [f32]| {
                    b.copy_from_slice(a)
                }),
            };
            held_tensor::<B>(t, shape, precision, device)
        }
    }
}

/// Whether `held` (`[cols, rows]`, as [`held_transposed`] made it at `precision`) is exactly the
/// transpose of `data` (`[rows, cols]` row-major) held the same way: then lookups of `data`'s
/// rows can read `held`'s columns. Compared bit for bit in 64-row blocks (parallel on flex).
pub(crate) fn equals_transposed<B: ModelBackend>(
    held: &Tensor<B, 2>,
    shape: crate::kernels::panels::WeightShape,
    data: &[f32],
    precision: WeightDtype,
) -> bool {
    let (cols, rows) = (shape.k, shape.n);
    if data.len() != rows * cols {
        return false;
    }
    let round = |x: f32| -> u32 {
        match precision {
            WeightDtype::Bf16 => bf16_rne(x).to_f32().to_bits(),
            WeightDtype::F16 => half::f16::from_f32(x).to_f32().to_bits(),
            WeightDtype::Auto | WeightDtype::F32 | WeightDtype::Q8_0 | WeightDtype::Q4_0 => {
                x.to_bits()
            }
        }
    };
    fn all_blocks(n: usize, f: impl Fn(usize) -> bool + Sync + Send) -> bool {
        use rayon::prelude::*;
        (0..n).into_par_iter().all(f)
    }
    // `at(j, i)`: element `[j, i]` of `held` (stored as `shape` says) as f32 bits.
    let check = |at: &(dyn Fn(usize, usize) -> u32 + Sync)| {
        all_blocks(rows.div_ceil(64), |b| {
            let (r0, r1) = (b * 64, (b * 64 + 64).min(rows));
            (0..cols).all(|j| (r0..r1).all(|i| at(j, i) == round(data[i * cols + j])))
        })
    };
    // In place where the backend can read the held weight.
    if shape.layout.is_blocks() {
        // Quantized: not the values of `data` (the embedding keeps its own).
        return false;
    }
    let read = B::read_held(held, shape.layout, |h| match h {
        _ if h.len() != shape.len() => false,
        Held::F32(h) => check(&|j, i| h[shape.at(j, i)].to_bits()),
        Held::Bf16(h) => check(&|j, i| h[shape.at(j, i)].to_f32().to_bits()),
        Held::F16(h) => check(&|j, i| h[shape.at(j, i)].to_f32().to_bits()),
        Held::Q8_0(_) | Held::Q4_0(_) => false,
    });
    if let Some(same) = read {
        return same;
    }
    let h = host_f32(held);
    h.len() == shape.len() && check(&|j, i| h[shape.at(j, i)].to_bits())
}

/// [`bf16_slice`] over a whole vector, in parallel for large inputs.
fn to_bf16(v: &[f32]) -> Vec<half::bf16> {
    const CHUNK: usize = 1 << 16;
    if v.len() <= CHUNK {
        // Small (an adapter's factors): written once, no zero-fill first (a small zeroed
        // buffer comes from the heap and is cleared by `memset`).
        return v.iter().map(|&x| bf16_rne(x)).collect();
    }
    let mut out = crate::kernels::buffer::zeroed::<half::bf16>(v.len());
    use rayon::prelude::*;
    out.par_chunks_mut(CHUNK)
        .zip(v.par_chunks(CHUNK))
        .for_each(|(o, i)| bf16_slice(i, o));
    out
}

/// Whether backend `B` keeps 16-bit weights for graftlm's host kernels (burn-flex does; the
/// others would convert on every matmul, so they hold 16-bit choices as rounded f32).
pub fn holds_16bit<B: ModelBackend>(device: &B::Device) -> bool {
    let _ = device;
    B::holds_16bit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix held from values as stored equals the one held from their f32 widening, for
    /// every stored type and held precision (f32 values near bf16 ties, so rounding is seen).
    #[cfg(feature = "flex")]
    #[test]
    fn held_values_hold_what_held_tensor_holds() {
        use crate::backend::Flex;
        use crate::checkpoint::Values;
        let dev = Default::default();
        let f: Vec<f32> = (0..6 * 7)
            .map(|i| (i as f32 - 20.0) * (1.0 + 1.0 / 256.0 + i as f32 / 65536.0))
            .collect();
        let bf: Vec<half::bf16> = f.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let hf: Vec<half::f16> = f.iter().map(|&v| half::f16::from_f32(v)).collect();
        let wide = |v: Values<'_>| v.to_f32_vec();
        for values in [Values::F32(&f), Values::Bf16(&bf), Values::F16(&hf)] {
            for p in [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16] {
                let got = held_values::<Flex>(values, [6, 7], p, &dev);
                let want = held_tensor::<Flex>(wide(values), [6, 7], p, &dev);
                assert_eq!(got.dtype(), want.dtype(), "{values:?} at {p:?}");
                assert_eq!(host_f32(&got), host_f32(&want), "{values:?} at {p:?}");
            }
        }
    }

    #[test]
    fn auto_keeps_a_uniform_16_bit_checkpoint_and_never_rounds() {
        let a = WeightDtype::Auto;
        assert_eq!(a.resolve(["BF16", "BF16"], true), WeightDtype::Bf16);
        assert_eq!(a.resolve(["F16"], true), WeightDtype::F16);
        assert_eq!(a.resolve(["BF16", "F32"], true), WeightDtype::F32);
        assert_eq!(a.resolve(["F16", "BF16"], true), WeightDtype::F32);
        assert_eq!(a.resolve(["BF16"], false), WeightDtype::F32);
        assert_eq!(a.resolve([], true), WeightDtype::F32);
        assert_eq!(WeightDtype::F16.resolve(["F32"], false), WeightDtype::F16);
    }

    #[test]
    fn parses_and_rounds() {
        assert_eq!("BF16".parse::<WeightDtype>().unwrap(), WeightDtype::Bf16);
        assert_eq!("fp16".parse::<WeightDtype>().unwrap(), WeightDtype::F16);
        assert!("int8".parse::<WeightDtype>().is_err());
        let mut v = [1.0f32 + 1.0 / 256.0 + 1.0 / 1024.0, 3.0];
        WeightDtype::Bf16.round(&mut v);
        assert_eq!(v, [1.0 + 1.0 / 128.0, 3.0]);
        let mut v = [1.0f32 / 3.0];
        WeightDtype::F16.round(&mut v);
        assert_eq!(v[0], half::f16::from_f32(1.0 / 3.0).to_f32());
        assert_ne!(v[0], 1.0 / 3.0);
    }

    #[test]
    fn bf16_conversion_rounds_to_nearest_even_like_half() {
        let mut s = 3u32;
        let mut v: Vec<f32> = (0..200_000)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                f32::from_bits(s & 0xbfff_ffff) // finite, both signs, every magnitude below 2
            })
            .collect();
        // Exact halfway cases, both parities, and values at the top of bf16's range.
        v.extend([
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::MAX,
            -f32::MAX,
            0.0,
            -0.0,
        ]);
        let got = to_bf16(&v);
        for (x, g) in v.iter().zip(&got) {
            assert_eq!(g.to_bits(), half::bf16::from_f32(*x).to_bits(), "{x:e}");
        }
    }
}
