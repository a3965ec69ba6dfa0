//! `y = x·W + bias + Σ scale·(x·A)·B` on the host, for any number of rows: one row (decode,
//! [`decode`]), a few (a batch of sequences, [`batch`]) or many (a prompt, [`prefill`]), all on
//! slices, with `W` held as [`WeightShape`] says and in any [`Held`] dtype.
//!
//! Every path sums each output in the same order (the weight product, then the bias, then each
//! term), so one row gives the same bits whichever path runs it.

pub(crate) mod batch;
pub(crate) mod decode;
pub(crate) mod prefill;
pub(crate) mod tiles;
mod tiles_bf16;

use crate::kernels::panels::{Layout, WeightShape};
use crate::kernels::weight::{Held, Weight};

/// One low-rank term: `scale · (x·A)·B`, `A` `[k, rank]`, `B` `[rank, n]`, added to every row of
/// the output or only to `rows` (sorted, distinct, in range).
#[derive(Clone, Copy)]
pub(crate) struct Term<'a> {
    pub a: Held<'a>,
    pub b: Held<'a>,
    pub rank: usize,
    pub scale: f32,
    pub rows: Option<&'a [usize]>,
}

/// One linear's data as the kernels read them: the weight (held as `shape` says), the bias
/// (`[n]`) and the low-rank terms, every length checked against the shape.
pub(crate) struct Operands<'a> {
    pub w: Held<'a>,
    pub shape: WeightShape,
    pub bias: Option<&'a [f32]>,
    pub terms: Vec<Term<'a>>,
}

impl<'a> Operands<'a> {
    /// The operands, or `None` when a length disagrees with `shape` (the weight's storage must
    /// hold `shape.len()` values, the bias `n`, each `A` `k·rank` and each `B` `rank·n`).
    pub(crate) fn new(
        w: Held<'a>,
        shape: WeightShape,
        bias: Option<&'a [f32]>,
        terms: Vec<Term<'a>>,
    ) -> Option<Self> {
        let (k, n) = (shape.k, shape.n);
        let fits = w.len() == shape.len()
            && w.is_blocks() == shape.layout.is_blocks()
            && terms.iter().all(|t| !t.a.is_blocks() && !t.b.is_blocks())
            && bias.is_none_or(|b| b.len() == n)
            && terms
                .iter()
                .all(|t| t.a.len() == k * t.rank && t.b.len() == t.rank * n);
        fits.then_some(Self {
            w,
            shape,
            bias,
            terms,
        })
    }
}

/// Up to this many rows, low-rank terms run row by row (`x·A` per row, then one pass over the
/// column tiles for every row's `(x·A)·B`); past it, as matrix products (prompts).
const MAX_JOB_ROWS: usize = 64;

/// `x·W + bias + Σ scale·(x·A)·B` for the `m` rows of `x` (`[m, k]` row-major); `None` where
/// no host kernel serves this case (several rows on a CPU without the vector kernels, a term for
/// some rows of a one-row input, a row index out of range, `x` not `m·k` values).
pub(crate) fn rows(x: &[f32], m: usize, op: &Operands<'_>) -> Option<Vec<f32>> {
    use tiles::{for_tiles, tile, TILE};
    let (k, n) = (op.shape.k, op.shape.n);
    if m == 0 || x.len() != m * k {
        return None;
    }
    if m == 1 && !op.shape.layout.is_blocks() {
        // One pass over the output columns does the weight, the bias and every term.
        return decode::one_row(x, std::slice::from_ref(op));
    }
    let row_major = |k: usize, n: usize| WeightShape::rows([k, n]);
    let mut y = mul(x, &op.w, m, op.shape)?;
    if let Some(b) = op.bias {
        for row in y.chunks_mut(n) {
            row.iter_mut().zip(b).for_each(|(yj, bj)| *yj += bj);
        }
    }
    if m <= MAX_JOB_ROWS {
        // A few rows (a batch of sequences, each maybe with its own adapter): every row's
        // `x·A` first, then one parallel pass over column tiles adds each `(x·A)·B` — the
        // same arithmetic, term by term, as a one-row linear (gathering each adapter's rows
        // for two small products apiece costs more once there are many sequences).
        // (row, A, rank, B, scale)
        type Job<'t> = (usize, &'t Held<'t>, usize, &'t Held<'t>, f32);
        let mut jobs: Vec<Job<'_>> = Vec::new();
        for t in &op.terms {
            let job = |i| (i, &t.a, t.rank, &t.b, t.scale);
            match t.rows {
                Some(rows) => jobs.extend(rows.iter().map(|&i| job(i))),
                None => jobs.extend((0..m).map(job)),
            }
        }
        if jobs.iter().any(|j| j.0 >= m) {
            return None;
        }
        if jobs.is_empty() {
            // (No term for these rows: no pass over the columns at all.)
            return Some(y);
        }
        // The `x·A` products read every adapter's `A` once: in parallel (each is small).
        let pairs: Vec<(usize, Vec<f32>, &Held<'_>, f32)> = {
            use rayon::prelude::*;
            jobs.par_iter()
                .map(|job| {
                    let (i, a, r, b, scale) = *job;
                    let mut xa = vec![0f32; r];
                    tile(&x[i * k..(i + 1) * k], a, r, 0, &mut xa);
                    (i, xa, b, scale)
                })
                .collect()
        };
        let y_addr = y.as_mut_ptr() as usize;
        for_tiles(n, |j0, width| {
            let mut d = [0f32; TILE];
            let d = &mut d[..width];
            for (i, xa, b, scale) in &pairs {
                tile(xa, b, n, j0, d);
                // SAFETY: `i < m` (checked above) and `j0 + width <= n`, so the range lies in
                // `y` (`m × n`, alive for the whole pass); tiles are disjoint column ranges,
                // so no two tasks write the same element.
                let yr = unsafe {
                    std::slice::from_raw_parts_mut((y_addr as *mut f32).add(i * n + j0), width)
                };
                yr.iter_mut()
                    .zip(d.iter())
                    .for_each(|(yj, dj)| *yj += dj * scale);
            }
        });
        return Some(y);
    }
    for t in &op.terms {
        let (r, scale) = (t.rank, t.scale);
        match t.rows {
            None => {
                let xa = mul(x, &t.a, m, row_major(k, r))?;
                let d = mul(&xa, &t.b, m, row_major(r, n))?;
                y.iter_mut().zip(&d).for_each(|(yj, dj)| *yj += dj * scale);
            }
            Some(rows) => {
                // Only some rows: gather them, multiply, add back.
                let mr = rows.len();
                let mut xs = Vec::with_capacity(mr * k);
                for &i in rows {
                    xs.extend_from_slice(x.get(i * k..(i + 1) * k)?);
                }
                let xa = mul(&xs, &t.a, mr, row_major(k, r))?;
                let d = mul(&xa, &t.b, mr, row_major(r, n))?;
                for (&i, dr) in rows.iter().zip(d.chunks(n)) {
                    let yr = y.get_mut(i * n..(i + 1) * n)?;
                    yr.iter_mut().zip(dr).for_each(|(yj, dj)| *yj += dj * scale);
                }
            }
        }
    }
    Some(y)
}

/// `[m, k] × [k, n]` (`W` held as `shape` says, any dtype); `None` when there is no host kernel
/// for several rows on this CPU.
fn mul(x: &[f32], w: &Held<'_>, m: usize, shape: WeightShape) -> Option<Vec<f32>> {
    fn mul_w<W: Weight>(x: &[f32], w: &[W], m: usize, shape: WeightShape) -> Option<Vec<f32>> {
        let mut y = vec![0f32; m * shape.n];
        if m == 1 && shape.layout == Layout::Rows {
            tiles::matvec(x, w, &mut y);
        } else if m == 1 {
            crate::kernels::panels::matvec_panels_of(x, w, &mut y, crate::kernels::panels::PANEL);
        } else if m <= batch::MAX_ROWS {
            if !batch::matmul_in(x, w, shape, &mut y, m) {
                return None;
            }
        } else if !prefill::gemm_in(x, w, shape, &mut y, m) {
            return None;
        }
        Some(y)
    }
    /// Blocks: one row by the row dots, a few by the row dots per weight row, many by the
    /// dequantized GEMM (the row dots where this CPU has none).
    fn mul_blocks<B: crate::kernels::quant::dot::DotBlock>(
        x: &[f32],
        w: &[B],
        m: usize,
        n: usize,
    ) -> Vec<f32> {
        use crate::kernels::quant::many;
        let mut y = vec![0f32; m * n];
        if m == 1 {
            crate::kernels::quant::dot::matvec(x, w, &mut y);
        } else if m <= batch::MAX_ROWS || !many::prefill(x, m, w, n, &mut y) {
            many::few(x, m, w, n, &mut y);
        }
        y
    }
    if w.is_blocks()
        && (!shape.k.is_multiple_of(crate::kernels::quant::QK) || w.len() != shape.len())
    {
        return None;
    }
    match *w {
        Held::F32(w) => mul_w(x, w, m, shape),
        Held::Bf16(w) => mul_w(x, w, m, shape),
        Held::F16(w) => mul_w(x, w, m, shape),
        Held::Q8_0(w) => Some(mul_blocks(x, w, m, shape.n)),
        Held::Q4_0(w) => Some(mul_blocks(x, w, m, shape.n)),
    }
}
