//! The operands of [`super::ops::ModelOps`]' operations: a linear layer with its adapter terms,
//! a gated MLP's activation, an attention's scale and mask, RoPE tables.

use burn::prelude::*;

pub use crate::kernels::attention::Heads;
use crate::kernels::panels::WeightShape;

/// One low-rank term of a [`LinearOp`]: `scale · (x·A)·B`, `A` `[k, r]`, `B` `[r, n]`, added to
/// every row of the output or only to `rows` (sorted, distinct, in range).
pub struct RowTerm<'a, B: Backend> {
    pub a: &'a Tensor<B, 2>,
    pub b: &'a Tensor<B, 2>,
    pub scale: f32,
    pub rows: Option<&'a [usize]>,
}

/// A per-output affine correction `y ← scale ⊙ (y + bias)` (`[n]` each), applied last.
#[derive(Clone, Copy)]
pub struct AffineOp<'a, B: Backend> {
    pub scale: &'a Tensor<B, 1>,
    pub bias: &'a Tensor<B, 1>,
}

/// A linear layer as the backend runs it: `y = x·W + bias + Σ terms`, then `affine`. `W` is
/// `[k, n]`, held as `shape` says (row-major, or panels where [`ModelOps::holds_panels`]).
pub struct LinearOp<'a, B: Backend> {
    pub weight: &'a Tensor<B, 2>,
    pub shape: WeightShape,
    pub bias: Option<&'a Tensor<B, 1>>,
    pub terms: Vec<RowTerm<'a, B>>,
    pub affine: Option<AffineOp<'a, B>>,
}

/// The activation of a gated MLP's gate projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `silu` (Llama and most gated families).
    Silu,
    /// Exact `gelu` (Gemma with `gelu`).
    Gelu,
    /// `gelu` with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Scale, soft-cap and mask of one attention over positions `0..pos + t`.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpec {
    pub scale: f64,
    /// Gemma 2: `tanh(s / c) · c` on the scores.
    pub softcap: Option<f64>,
    /// Position of the first query.
    pub pos: usize,
    /// Sliding window, when narrower than the positions attended over.
    pub window: Option<usize>,
}

impl AttentionSpec {
    /// The scale, soft-cap and window of `heads`, for queries from position `pos` on.
    pub fn of(heads: &Heads, pos: usize) -> Self {
        Self {
            scale: heads.scale,
            softcap: heads.softcap,
            pos,
            window: heads.window,
        }
    }
}

/// RoPE tables `[positions, n]` (`cos`, `sin`) covering at least the positions rotated, and `n`,
/// the rotated dimensions of each head (even, at most the head size).
pub struct RopeTables<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
    pub n: usize,
}
