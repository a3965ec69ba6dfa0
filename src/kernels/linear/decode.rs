//! One activation row through one linear, or through several that read the same row (a gated
//! MLP's gate and up projections), in one parallel pass over their output columns: the decode
//! step's hot path.
//!
//! Each task owns a column tile of one linear and does everything for it while the tile is in
//! L1: the weight product, the bias and every low-rank term's `(x·A)·B`. With several linears,
//! each thread takes its share of every one (balanced whichever of them carry terms), and the
//! pass ends in one join instead of one per linear. Columns are summed in the same order
//! however the tiles fall, so the results are those of the linears run one by one. A linear's
//! tiles share its first term's `x·A` ([`share`]): with AVX-512 panels each computes a share of
//! it in its weight pass and the others take it, so most of `A` is read by one thread, not by
//! every one.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::tiles::{column_tile, panel_tile, panel_tile_side, tile};
use super::Operands;
use crate::kernels::panels::{in_pass, Layout};
use crate::kernels::weight::threads;

pub(crate) mod share;

use share::SharedXa;

/// One-row calls so far (for [`SharedXa`]'s turns).
static CALLS: AtomicUsize = AtomicUsize::new(0);

/// `[x·W₁ + b₁ + Σ s·(x·A)·B | x·W₂ + … | …]` for one row `x` (every part's `k` values), the
/// parts' outputs side by side; `None` when there is no part, a part's `k` is not `x.len()`, or
/// a term covers only some rows (one row is all or nothing).
pub(crate) fn one_row(x: &[f32], parts: &[Operands<'_>]) -> Option<Vec<f32>> {
    if parts.is_empty()
        || parts.iter().any(|p| {
            p.shape.k != x.len()
                || p.shape.layout.is_blocks()
                || p.terms.iter().any(|t| t.rows.is_some())
        })
    {
        return None;
    }
    // Each part's columns in tiles over all the threads, ordered tile 0 of every part,
    // then tile 1...: a thread's contiguous share of the task list holds its tiles of
    // every part. A part's tiles share its first term's `x·A` ([`SharedXa`]).
    let threads = threads();
    let mut y = vec![0f32; parts.iter().map(|r| r.shape.n).sum()];
    let widths: Vec<usize> = parts
        .iter()
        .map(|r| column_tile(r.shape.n, threads))
        .collect();
    // Which tile computes which share turns from call to call and part to part: for a rank
    // of 16 (one share) the threads take turns reading `A`, so no thread always reads more.
    let turn = CALLS.fetch_add(1, Ordering::Relaxed);
    let shared: Vec<Option<SharedXa>> = parts
        .iter()
        .zip(&widths)
        .enumerate()
        .map(|(i, (r, &width))| match r.terms.first() {
            // (Only where the panel kernels compute a share in the weight pass.)
            Some(term) if r.shape.layout == Layout::Panels && in_pass() => Some(SharedXa::new(
                term.rank,
                r.shape.n.div_ceil(width),
                turn.wrapping_add(i),
            )),
            _ => None,
        })
        .collect();
    let mut tasks: Vec<Task<'_, '_>> = Vec::new();
    let mut rest = &mut y[..];
    for ((r, &width), share) in parts.iter().zip(&widths).zip(&shared) {
        let (mine, after) = rest.split_at_mut(r.shape.n);
        rest = after;
        tasks.extend(mine.chunks_mut(width).enumerate().map(|(t, out)| Task {
            t,
            part: r,
            j0: t * width,
            out,
            share: share.as_ref(),
        }));
    }
    tasks.sort_by_key(|task| task.t); // stable: parts stay in order within a tile index
    let run = |task: Task<'_, '_>| run_tile(x, task);
    if threads > 1 && tasks.len() > 1 {
        use rayon::prelude::*;
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    Some(y)
}

/// Tile `t` of a part: its columns `j0..j0 + out.len()`.
struct Task<'r, 'y> {
    t: usize,
    part: &'r Operands<'r>,
    j0: usize,
    out: &'y mut [f32],
    share: Option<&'r SharedXa>,
}

/// One task: the weight, the bias, then every term.
fn run_tile(x: &[f32], task: Task<'_, '_>) {
    let Task {
        t,
        part: p,
        j0,
        out,
        share,
    } = task;
    let n = p.shape.n;
    // The first term's `x·A` is shared among the part's tiles: this one computes its share
    // of `A`'s columns in its weight pass and takes the others' from them, so most of `A` is
    // read once. Every other term's is computed by each task after the pass (cheaper than
    // making the others wait for one thread). After the pass, `A` and `B` are read without
    // software prefetches: they are small, and prefetching them slows the weight stream.
    let mut fused = false;
    if let (Some(share), Some(term)) = (share, p.terms.first()) {
        let (a, r) = (&term.a, term.rank);
        let cols = share.columns(t);
        if !cols.is_empty() {
            let mut xa = vec![0f32; cols.len()];
            let mut publish = |mine: &[f32]| share.publish(t, mine);
            fused = panel_tile_side(x, &p.w, j0, out, (a, r, cols.start), &mut xa, &mut publish);
        }
    }
    if !fused {
        match p.shape.layout {
            // (Block layouts are refused above.)
            Layout::Rows | Layout::Q8_0 | Layout::Q4_0 => tile(x, &p.w, n, j0, out),
            Layout::Panels => panel_tile(x, &p.w, j0, out),
        }
    }
    let xas: Vec<Vec<f32>> = p
        .terms
        .iter()
        .enumerate()
        .map(|(i, term)| match share {
            Some(share) if i == 0 => {
                share.gather(|cols, xa| tile(x, &term.a, term.rank, cols.start, xa))
            }
            _ => {
                let mut xa = vec![0f32; term.rank];
                tile(x, &term.a, term.rank, 0, &mut xa);
                xa
            }
        })
        .collect();
    if let Some(b) = p.bias {
        out.iter_mut().zip(&b[j0..]).for_each(|(yj, bj)| *yj += bj);
    }
    // (`tile` zeroes `d` itself: no buffer at all without terms.)
    let mut d = vec![0f32; if p.terms.is_empty() { 0 } else { out.len() }];
    for (term, xa) in p.terms.iter().zip(&xas) {
        tile(xa, &term.b, n, j0, &mut d);
        out.iter_mut()
            .zip(d.iter())
            .for_each(|(yj, dj)| *yj += dj * term.scale);
    }
}
