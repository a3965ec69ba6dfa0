//! A linear layer's burn tensors read in place on burn-flex and run by the host kernels
//! ([`crate::kernels::linear`]): `x·W + bias + Σ scale·(x·A)·B` for any number of rows, and
//! one row through several linears that share it in one parallel pass.

use burn::prelude::*;

use super::{f32s, prim, try_silu_mul};
pub(crate) use crate::backend::ops::RowTerm;
use crate::backend::ops::{AffineOp, Gate, LinearOp, ModelOps};
use crate::backend::{reference, Flex};
use crate::kernels::panels::WeightShape;

/// One linear: its weight held as `shape` says, bias, and low-rank terms.
pub(crate) struct Part<'t> {
    pub w: &'t Tensor<Flex, 2>,
    pub shape: WeightShape,
    pub bias: Option<&'t Tensor<Flex, 1>>,
    pub terms: &'t [RowTerm<'t, Flex>],
}

impl<'t> Part<'t> {
    /// The weight, bias and terms of `op` (its affine correction is the caller's).
    fn of(op: &'t LinearOp<'t, Flex>) -> Self {
        Self {
            w: op.weight,
            shape: op.shape,
            bias: op.bias,
            terms: &op.terms,
        }
    }
}

/// [`ModelOps::linear_layer`]: the host kernels for the weight, bias and terms where they apply,
/// then the affine correction in burn ops (as the default applies it); the default otherwise.
pub(crate) fn linear(x: Tensor<Flex, 2>, op: &LinearOp<'_, Flex>) -> Tensor<Flex, 2> {
    match try_linear_in(&x, op.weight, op.shape, op.bias, &op.terms) {
        Some(y) => match &op.affine {
            Some(af) => affine(y, af),
            None => y,
        },
        None => reference::linear(x, op),
    }
}

/// `y ← scale ⊙ (y + bias)`.
fn affine(y: Tensor<Flex, 2>, af: &AffineOp<'_, Flex>) -> Tensor<Flex, 2> {
    (y + af.bias.clone().unsqueeze_dim::<2>(0)) * af.scale.clone().unsqueeze_dim::<2>(0)
}

/// [`ModelOps::gated`]: one row through both projections in one parallel pass (and `silu·mul`
/// on the host) where the one-row kernel applies; else the two projections side by side under
/// one `rayon::join` (a thread done with its share of one picks up work of the other instead of
/// waiting at its end). The same values either way.
pub(crate) fn gated(
    x: Tensor<Flex, 2>,
    gate: &LinearOp<'_, Flex>,
    up: &LinearOp<'_, Flex>,
    act: Gate,
) -> Tensor<Flex, 2> {
    let n = gate.shape.n;
    let plain = gate.affine.is_none() && up.affine.is_none() && up.shape.n == n;
    if x.dims()[0] == 1 && plain {
        if let Some(mut y) = one_row(&x, &[Part::of(gate), Part::of(up)]) {
            let dev = x.device();
            if act != Gate::Silu {
                // The same tensor ops as the two-call path, on the two halves.
                let b = y.split_off(n);
                let a = Tensor::from_data(TensorData::new(y, [1, n]), &dev);
                let b = Tensor::from_data(TensorData::new(b, [1, n]), &dev);
                return reference::activate(a, act) * b;
            }
            let (a, b) = y.split_at_mut(n);
            crate::kernels::math::silu_mul(a, b);
            y.truncate(n);
            return Tensor::from_data(TensorData::new(y, [1, n]), &dev);
        }
    }
    let (a, b) = if crate::kernels::weight::threads() > 1 {
        let x1 = x.clone();
        rayon::join(
            || Flex::linear_layer(x1, gate),
            || Flex::linear_layer(x, up),
        )
    } else {
        (
            Flex::linear_layer(x.clone(), gate),
            Flex::linear_layer(x, up),
        )
    };
    match act {
        Gate::Silu => try_silu_mul(&a, &b).unwrap_or_else(|| reference::activate(a, act) * b),
        _ => reference::activate(a, act) * b,
    }
}

/// `x·W + bias + Σ scale·(x·A)·B` for `x` `[m, k]` (`W` row-major `[k, n]`): [`try_linear_in`]
/// for a row-major weight.
#[cfg(test)]
pub fn try_linear(
    x: &Tensor<Flex, 2>,
    w: &Tensor<Flex, 2>,
    bias: Option<&Tensor<Flex, 1>>,
    terms: &[RowTerm<'_, Flex>],
) -> Option<Tensor<Flex, 2>> {
    try_linear_in(x, w, WeightShape::rows(w.dims()), bias, terms)
}

/// `x·W + bias + Σ scale·(x·A)·B` for `x` `[m, k]`, `W` held as `shape` says, computed on the
/// host in one go when every tensor can be read in place; `None` to fall back to burn's ops (a
/// tensor not contiguous, a shape or length that disagrees, no host kernel for several rows on
/// this CPU, a term for some rows of a one-row input). Same
/// order of operations as the fallback: the weight product, then the bias, then each term.
pub(crate) fn try_linear_in(
    x: &Tensor<Flex, 2>,
    w: &Tensor<Flex, 2>,
    shape: WeightShape,
    bias: Option<&Tensor<Flex, 1>>,
    terms: &[RowTerm<'_, Flex>],
) -> Option<Tensor<Flex, 2>> {
    let [m, k] = x.dims();
    if m == 0 || k != shape.k {
        return None;
    }
    let part = Part {
        w,
        shape,
        bias,
        terms,
    };
    let owned = host::owned(&part);
    let op = host::operands(&part, &owned)?;
    let xt = prim(x);
    let copy;
    let xd = match f32s(&xt) {
        Some(d) if d.len() == m * k => d,
        _ => {
            copy = x.clone().into_data().into_vec::<f32>().ok()?;
            &copy[..]
        }
    };
    let y = crate::kernels::linear::rows(xd, m, &op)?;
    Some(Tensor::from_data(
        TensorData::new(y, [m, shape.n]),
        &x.device(),
    ))
}

/// `[x·W₁ + b₁ + Σ s·(x·A)·B | x·W₂ + … | …]` for one row `x` (`[1, k]`, every part's `k`),
/// the parts' outputs side by side; `None` when a tensor is not contiguous, a shape disagrees
/// or a term covers only some rows.
pub(crate) fn one_row(x: &Tensor<Flex, 2>, parts: &[Part<'_>]) -> Option<Vec<f32>> {
    let [m, k] = x.dims();
    if m != 1 {
        return None;
    }
    let owned: Vec<host::Owned> = parts.iter().map(host::owned).collect();
    let ops: Vec<_> = parts
        .iter()
        .zip(&owned)
        .map(|(p, o)| host::operands(p, o))
        .collect::<Option<_>>()?;
    let xt = prim(x);
    let copy;
    let xd = match f32s(&xt) {
        Some(d) if d.len() == k => d,
        _ => {
            copy = x.clone().into_data().into_vec::<f32>().ok()?;
            &copy[..]
        }
    };
    crate::kernels::linear::decode::one_row(xd, &ops)
}

mod host {
    use burn_flex::FlexTensor;

    use super::super::{f32s, held, prim};
    use super::Part;
    use crate::kernels::linear::{Operands, Term};

    /// A linear's tensors as burn-flex primitives (kept alive while their data are borrowed).
    pub(super) struct Owned {
        w: FlexTensor,
        bias: Option<FlexTensor>,
        /// `(A, B, rank)`.
        terms: Vec<(FlexTensor, FlexTensor, usize)>,
    }

    /// The part's tensors as burn-flex primitives.
    pub(super) fn owned(p: &Part<'_>) -> Owned {
        Owned {
            w: prim(p.w),
            bias: p.bias.map(prim),
            terms: p
                .terms
                .iter()
                .map(|t| (prim(t.a), prim(t.b), t.a.dims()[1]))
                .collect(),
        }
    }

    /// The data of `o` (made from `p`) as the kernels read them; `None` when a tensor is not
    /// contiguous or its length disagrees with the part's shapes.
    pub(super) fn operands<'a>(p: &Part<'a>, o: &'a Owned) -> Option<Operands<'a>> {
        let bias = match &o.bias {
            Some(b) => Some(f32s(b)?),
            None => None,
        };
        let terms = o
            .terms
            .iter()
            .zip(p.terms)
            .map(|((a, b, rank), t)| {
                Some(Term {
                    a: held(a, crate::kernels::panels::Layout::Rows)?,
                    b: held(b, crate::kernels::panels::Layout::Rows)?,
                    rank: *rank,
                    scale: t.scale,
                    rows: t.rows,
                })
            })
            .collect::<Option<_>>()?;
        Operands::new(held(&o.w, p.shape.layout)?, p.shape, bias, terms)
    }
}
