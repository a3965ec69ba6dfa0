//! [`ModelOps`]: the operations the model asks of a backend beyond burn's own — a linear layer
//! with its adapter terms, a gated MLP's two projections, attention, RoPE, the KV-cache write,
//! folding an update into a weight. Each has a default made of plain burn ops
//! ([`super::reference`]), so every burn backend runs the model; burn-flex overrides them with
//! the host kernels ([`super::flex`]). The model calls one method per operation and never asks
//! which backend it runs on; an operation a fast path cannot take (a dtype, a shape, an update
//! kind) goes to the default inside the override.
//!
//! Every override gives the default's results up to floating-point rounding (the parity tests
//! hold every backend to the same reference).

use burn::prelude::*;

pub use super::operands::{AffineOp, AttentionSpec, Gate, Heads, LinearOp, RopeTables, RowTerm};
use super::reference;
use crate::kernels::panels::Layout;
use crate::kernels::panels::WeightShape;
use crate::kernels::weight::Held;

/// A burn backend graftlm can run a model on: burn's ops plus these (see the module docs).
/// Implemented for every backend the build enables ([`super::Flex`], [`super::NdArray`],
/// [`super::Cuda`]).
pub trait ModelOps: Backend {
    /// Whether linear weights are held as 16-column panels (the host kernels' layout).
    fn holds_panels() -> bool {
        false
    }

    /// Whether 16-bit weights are held in 16 bits (else as f32 rounded to 16-bit values: a
    /// backend without 16-bit kernels would convert them on every product).
    fn holds_16bit() -> bool {
        false
    }

    /// The elements of a held weight `[k, n]` laid out as `layout` says, read in place on the
    /// host, handed to `f`; `None` (without calling `f`) where the backend's tensors cannot be
    /// read in place.
    fn read_held<R>(
        t: &Tensor<Self, 2>,
        layout: Layout,
        f: impl FnOnce(Held<'_>) -> R,
    ) -> Option<R> {
        let _ = (t, layout, f);
        None
    }

    /// A weight of GGML blocks (`bytes` of `layout`'s blocks, `shape` `[rows, bytes per row]`)
    /// held as they are, for this backend's block kernels; `None` where it has none (the caller
    /// then holds the dequantized values).
    fn hold_blocks(
        bytes: Vec<u8>,
        shape: [usize; 2],
        layout: Layout,
        device: &Self::Device,
    ) -> Option<Tensor<Self, 2>> {
        let _ = (bytes, shape, layout, device);
        None
    }

    /// Runs one forward pass's work `f` where this backend's kernels run it best (burn-flex:
    /// on a worker of its thread pool).
    fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// `f` over `items`, results in order: side by side where the backend's work runs on the
    /// host's thread pool (burn-flex), one after another elsewhere.
    fn each<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
        items.into_iter().map(f).collect()
    }

    /// `x·W + bias + Σ terms`, then the affine correction, for `x` `[m, k]` → `[m, n]`.
    fn linear_layer(x: Tensor<Self, 2>, op: &LinearOp<'_, Self>) -> Tensor<Self, 2> {
        reference::linear(x, op)
    }

    /// `gate(x·W_gate …) ⊙ (x·W_up …)` for `x` `[m, k]`: a gated MLP's hidden activations.
    fn gated(
        x: Tensor<Self, 2>,
        gate: &LinearOp<'_, Self>,
        up: &LinearOp<'_, Self>,
        act: Gate,
    ) -> Tensor<Self, 2> {
        reference::gated(x, gate, up, act)
    }

    /// Rotates `x` (`[b, heads, t, head_size]`, positions `start..start + t`): the first
    /// `tables.n` dimensions of each head, rotate-half pairing.
    fn rope(x: Tensor<Self, 4>, tables: &RopeTables<Self>, start: usize) -> Tensor<Self, 4> {
        reference::rope(x, tables, start)
    }

    /// `softmax(mask(cap(q·kᵀ·scale)))·v` for `q` `[b, nh, t, hs]` and `k`, `v`
    /// `[b, nkv, pos + t, hs]` (grouped-query: `nh` a multiple of `nkv`).
    fn causal_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        spec: AttentionSpec,
    ) -> Tensor<Self, 4> {
        reference::attention(q, k, v, spec)
    }

    /// Attention of one sequence from its fused projection `qkv` (`[1, t, (nh + 2·nkv)·hs]`) at
    /// positions `pos..pos + t`: RoPE on queries and keys, the new keys and values
    /// (`[1, nkv, t, hs]`) handed to `append` (which stores them and returns every key and
    /// value so far), and the heads' outputs `[1, t, nh·hs]`.
    fn attend_qkv(
        qkv: Tensor<Self, 3>,
        heads: Heads,
        rope: &RopeTables<Self>,
        pos: usize,
        append: impl FnOnce(Tensor<Self, 4>, Tensor<Self, 4>) -> (Tensor<Self, 4>, Tensor<Self, 4>),
    ) -> Tensor<Self, 3> {
        reference::attend_qkv(qkv, heads, rope, pos, append)
    }

    /// Writes `new` (`[1, h, t, hs]`) into `cache` (`[1, h, ≥ pos + t, hs]`) at positions
    /// `pos..pos + t`.
    fn write_cache(cache: &mut Tensor<Self, 4>, new: Tensor<Self, 4>, pos: usize) {
        reference::write_cache(cache, new, pos)
    }

    /// `w ← w ± s·(a·b)` in place for an f32 weight held as `shape` says (`a` `[k, r]`, `b`
    /// `[r, n]`); `false`, nothing changed, where the backend has no in-place form (the caller
    /// then computes it with burn ops).
    fn fold_low_rank(
        w: &mut Tensor<Self, 2>,
        shape: WeightShape,
        a: &Tensor<Self, 2>,
        b: &Tensor<Self, 2>,
        scale: f32,
        subtract: bool,
    ) -> bool {
        let _ = (w, shape, a, b, scale, subtract);
        false
    }

    /// A 16-bit weight `base` (held as `shape` says) with `terms` (`A`, `B`, scale) added in
    /// f32 and rounded back to the base's precision (`narrow`) or kept in f32, in the same
    /// layout; `None` where the backend has no host form (the caller then uses burn ops).
    fn merged_16(
        base: &Tensor<Self, 2>,
        shape: WeightShape,
        terms: &[(&Tensor<Self, 2>, &Tensor<Self, 2>, f32)],
        narrow: bool,
    ) -> Option<Tensor<Self, 2>> {
        let _ = (base, shape, terms, narrow);
        None
    }
}

#[cfg(feature = "ndarray")]
impl ModelOps for super::NdArray {}

#[cfg(feature = "cuda")]
impl ModelOps for super::Cuda {}
