//! A linear layer's burn tensors read in place on burn-flex and run by the host kernels
//! ([`crate::kernels::linear`]): `x·W + bias + Σ scale·(x·A)·B` for any number of rows, and
//! one row through several linears that share it in one parallel pass.

use burn::prelude::*;

use crate::kernels::panels::WeightShape;

/// One low-rank term: `scale · (x·A)·B`, `A` `[k, r]`, `B` `[r, n]`, added to every row of the
/// output or only to `rows` (sorted, distinct, in range).
pub struct RowTerm<'a, B: Backend> {
    pub a: &'a Tensor<B, 2>,
    pub b: &'a Tensor<B, 2>,
    pub scale: f32,
    pub rows: Option<&'a [usize]>,
}

/// One linear: its weight held as `shape` says, bias, and low-rank terms.
pub(crate) struct Part<'t, B: Backend> {
    pub w: &'t Tensor<B, 2>,
    pub shape: WeightShape,
    pub bias: Option<&'t Tensor<B, 1>>,
    pub terms: &'t [RowTerm<'t, B>],
}

/// `x·W + bias + Σ scale·(x·A)·B` for `x` `[m, k]` (`W` row-major `[k, n]`): [`try_linear_in`]
/// for a row-major weight.
#[cfg(test)]
pub fn try_linear<B: Backend>(
    x: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    terms: &[RowTerm<'_, B>],
) -> Option<Tensor<B, 2>> {
    try_linear_in(x, w, WeightShape::rows(w.dims()), bias, terms)
}

/// `x·W + bias + Σ scale·(x·A)·B` for `x` `[m, k]`, `W` held as `shape` says, computed on the
/// host in one go when every tensor is a burn-flex tensor that can be read in place; `None` to
/// fall back to the backend's own ops (another backend, a shape or length that disagrees, no
/// host kernel for several rows on this CPU, a term for some rows of a one-row input). Same
/// order of operations as the fallback: the weight product, then the bias, then each term.
pub(crate) fn try_linear_in<B: Backend>(
    x: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    shape: WeightShape,
    bias: Option<&Tensor<B, 1>>,
    terms: &[RowTerm<'_, B>],
) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "flex")]
    {
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
        let owned = host::owned(&part)?;
        let op = host::operands(&part, &owned)?;
        let xt = super::flex(x)?;
        let copy;
        let xd = match super::f32s(&xt) {
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
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, w, shape, bias, terms);
        None
    }
}

/// `[x·W₁ + b₁ + Σ s·(x·A)·B | x·W₂ + … | …]` for one row `x` (`[1, k]`, every part's `k`),
/// the parts' outputs side by side; `None` when any tensor cannot be read in place on the host
/// (any backend but burn-flex), a shape disagrees or a term covers only some rows.
pub(crate) fn one_row<B: Backend>(x: &Tensor<B, 2>, parts: &[Part<'_, B>]) -> Option<Vec<f32>> {
    #[cfg(feature = "flex")]
    {
        let [m, k] = x.dims();
        if m != 1 {
            return None;
        }
        let owned: Vec<host::Owned> = parts.iter().map(host::owned).collect::<Option<_>>()?;
        let ops: Vec<_> = parts
            .iter()
            .zip(&owned)
            .map(|(p, o)| host::operands(p, o))
            .collect::<Option<_>>()?;
        let xt = super::flex(x)?;
        let copy;
        let xd = match super::f32s(&xt) {
            Some(d) if d.len() == k => d,
            _ => {
                copy = x.clone().into_data().into_vec::<f32>().ok()?;
                &copy[..]
            }
        };
        crate::kernels::linear::decode::one_row(xd, &ops)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, parts);
        None
    }
}

#[cfg(feature = "flex")]
mod host {
    use burn::prelude::*;
    use burn_flex::FlexTensor;

    use super::super::{f32s, flex, held};
    use super::Part;
    use crate::kernels::linear::{Operands, Term};

    /// A linear's tensors as burn-flex primitives (kept alive while their data are borrowed).
    pub(super) struct Owned {
        w: FlexTensor,
        bias: Option<FlexTensor>,
        /// `(A, B, rank)`.
        terms: Vec<(FlexTensor, FlexTensor, usize)>,
    }

    /// The part's tensors as burn-flex primitives; `None` on any other backend.
    pub(super) fn owned<B: Backend>(p: &Part<'_, B>) -> Option<Owned> {
        Some(Owned {
            w: flex(p.w)?,
            bias: match p.bias {
                Some(b) => Some(flex(b)?),
                None => None,
            },
            terms: p
                .terms
                .iter()
                .map(|t| Some((flex(t.a)?, flex(t.b)?, t.a.dims()[1])))
                .collect::<Option<_>>()?,
        })
    }

    /// The data of `o` (made from `p`) as the kernels read them; `None` when a tensor is not
    /// contiguous or its length disagrees with the part's shapes.
    pub(super) fn operands<'a, B: Backend>(p: &Part<'a, B>, o: &'a Owned) -> Option<Operands<'a>> {
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
                    a: held(a)?,
                    b: held(b)?,
                    rank: *rank,
                    scale: t.scale,
                    rows: t.rows,
                })
            })
            .collect::<Option<_>>()?;
        Operands::new(held(&o.w)?, p.shape, bias, terms)
    }
}
