//! One activation row through one linear, or through several that read the same row (a gated
//! MLP's gate and up projections), in one parallel pass over their output columns: the decode
//! step's hot path on burn-flex.
//!
//! Each task owns a column tile of one linear and does everything for it while the tile is in
//! L1: the weight product, the bias and every low-rank term's `(x·A)·B`. With several linears,
//! each thread takes its share of every one (balanced whichever of them carry terms), and the
//! pass ends in one join instead of one per linear. Columns are summed in the same order
//! however the tiles fall, so the results are those of the linears run one by one. A linear's
//! tiles share its first term's `x·A` ([`share`]): with AVX-512 panels each computes a share of
//! it in its weight pass and the others take it, so most of `A` is read by one thread, not by
//! every one.

use burn::prelude::*;

use super::matvec::RowTerm;
use super::panels::WeightShape;

/// One linear of [`one_row`]: its weight held as `shape` says, bias, and low-rank terms (which
/// must apply to the whole row in [`one_row`]: `rows: None`).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) struct Part<'t, B: Backend> {
    pub w: &'t Tensor<B, 2>,
    pub shape: WeightShape,
    pub bias: Option<&'t Tensor<B, 1>>,
    pub terms: &'t [RowTerm<'t, B>],
}

/// `[x·W₁ + b₁ + Σ s·(x·A)·B | x·W₂ + … | …]` for one row `x` (`[1, k]`, every part's `k`),
/// the parts' outputs side by side; `None` when any tensor cannot be read in place on the host
/// (any backend but burn-flex), a shape disagrees or a term covers only some rows.
pub(crate) fn one_row<B: Backend>(x: &Tensor<B, 2>, parts: &[Part<'_, B>]) -> Option<Vec<f32>> {
    #[cfg(feature = "flex")]
    {
        host::one_row(x, parts)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, parts);
        None
    }
}

#[cfg(feature = "flex")]
pub(crate) mod share;

#[cfg(feature = "flex")]
pub(super) mod host {
    use burn::prelude::*;
    use burn_flex::FlexTensor;

    use super::share::SharedXa;
    use super::Part;
    use crate::model::matvec::{column_tile, panel_tile, panel_tile_side, tile};
    use crate::model::panels::{in_pass, Layout};
    use crate::model::weight::{f32s, flex, held, threads, Held};

    /// A linear's tensors as burn-flex primitives (kept alive while their data are borrowed).
    pub(in crate::model) struct Owned {
        w: FlexTensor,
        bias: Option<FlexTensor>,
        terms: Vec<(FlexTensor, FlexTensor, usize, f32)>,
    }

    /// A linear's data on the host, borrowed from [`Owned`] and checked against its shape (also
    /// what the several-row path of [`crate::model::matvec::try_linear_in`] reads).
    pub(in crate::model) struct Ready<'a> {
        pub w: Held<'a>,
        layout: Layout,
        n: usize,
        pub bias: Option<&'a [f32]>,
        /// `(A [k, r], B [r, n], r, scale)`, in the order of the part's terms.
        pub terms: Vec<(Held<'a>, Held<'a>, usize, f32)>,
    }

    /// The part's tensors as burn-flex primitives; `None` on any other backend.
    pub(in crate::model) fn owned<B: Backend>(p: &Part<'_, B>) -> Option<Owned> {
        Some(Owned {
            w: flex(p.w)?,
            bias: match p.bias {
                Some(b) => Some(flex(b)?),
                None => None,
            },
            terms: p
                .terms
                .iter()
                .map(|t| Some((flex(t.a)?, flex(t.b)?, t.a.dims()[1], t.scale)))
                .collect::<Option<_>>()?,
        })
    }

    /// The data of `o` (made from `p`) for inputs of `k` values; `None` when a tensor is not
    /// contiguous or its length disagrees with the part's shapes.
    pub(in crate::model) fn ready<'a, B: Backend>(
        p: &Part<'_, B>,
        o: &'a Owned,
        k: usize,
    ) -> Option<Ready<'a>> {
        let (shape, n) = (p.shape, p.shape.n);
        if shape.k != k {
            return None;
        }
        Some(Ready {
            w: held(&o.w).filter(|d| d.len() == shape.len())?,
            layout: shape.layout,
            n,
            bias: match &o.bias {
                Some(b) => Some(f32s(b).filter(|d| d.len() == n)?),
                None => None,
            },
            terms: o
                .terms
                .iter()
                .map(|(a, b, r, s)| {
                    let a = held(a).filter(|d| d.len() == k * r)?;
                    let b = held(b).filter(|d| d.len() == r * n)?;
                    Some((a, b, *r, *s))
                })
                .collect::<Option<_>>()?,
        })
    }

    /// One-row calls so far (for [`SharedXa`]'s turns).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    pub(super) fn one_row<B: Backend>(x: &Tensor<B, 2>, parts: &[Part<'_, B>]) -> Option<Vec<f32>> {
        let [m, k] = x.dims();
        if m != 1
            || parts.is_empty()
            || parts
                .iter()
                .any(|p| p.terms.iter().any(|t| t.rows.is_some()))
        {
            return None;
        }
        let owned: Vec<Owned> = parts.iter().map(owned).collect::<Option<_>>()?;
        let ready: Vec<Ready<'_>> = parts
            .iter()
            .zip(&owned)
            .map(|(p, o)| ready(p, o, k))
            .collect::<Option<_>>()?;
        let xt = flex(x)?;
        let copy;
        let xd = match f32s(&xt) {
            Some(d) if d.len() == k => d,
            _ => {
                copy = x.clone().into_data().into_vec::<f32>().ok()?;
                &copy[..]
            }
        };
        // Each part's columns in tiles over all the threads, ordered tile 0 of every part,
        // then tile 1...: a thread's contiguous share of the task list holds its tiles of
        // every part. A part's tiles share its first term's `x·A` ([`SharedXa`]).
        let threads = threads();
        let mut y = vec![0f32; ready.iter().map(|r| r.n).sum()];
        let widths: Vec<usize> = ready.iter().map(|r| column_tile(r.n, threads)).collect();
        // Which tile computes which share turns from call to call and part to part: for a rank
        // of 16 (one share) the threads take turns reading `A` (issue 8, 30 SmolLM2 layers,
        // bf16: plain / LoRA +0.2–3.7% against tile 0 always; f32 within ±1%).
        let turn = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared: Vec<Option<SharedXa>> = ready
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (r, &width))| match r.terms.first() {
                // (Only where the panel kernels compute a share in the weight pass.)
                Some(&(_, _, rank, _)) if r.layout == Layout::Panels && in_pass() => Some(
                    SharedXa::new(rank, r.n.div_ceil(width), turn.wrapping_add(i)),
                ),
                _ => None,
            })
            .collect();
        let mut tasks: Vec<Task<'_, '_>> = Vec::new();
        let mut rest = &mut y[..];
        for ((r, &width), share) in ready.iter().zip(&widths).zip(&shared) {
            let (mine, after) = rest.split_at_mut(r.n);
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
        let run = |task: Task<'_, '_>| run_tile(xd, task);
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
        part: &'r Ready<'r>,
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
        let n = p.n;
        // The first term's `x·A` is shared among the part's tiles: this one computes its share
        // of `A`'s columns in its weight pass and takes the others' from them (SmolLM2-135M
        // decode, separate / merged, bf16 0.90–0.91 → 0.92–0.93, f32 +0.5–4%). Every other
        // term's is computed by each task after the pass (one thread computing them while the
        // others waited cost more: issue 8, Intel VM). After the pass, `A` and `B` are read
        // without software prefetches (they cost 1–3% on Zen 4, session 11).
        let mut fused = false;
        if let (Some(share), Some((a, _, r, _))) = (share, p.terms.first()) {
            let cols = share.columns(t);
            if !cols.is_empty() {
                let mut xa = vec![0f32; cols.len()];
                let mut publish = |mine: &[f32]| share.publish(t, mine);
                fused =
                    panel_tile_side(x, &p.w, j0, out, (a, *r, cols.start), &mut xa, &mut publish);
            }
        }
        if !fused {
            match p.layout {
                Layout::Rows => tile(x, &p.w, n, j0, out),
                Layout::Panels => panel_tile(x, &p.w, j0, out),
            }
        }
        let xas: Vec<Vec<f32>> = p
            .terms
            .iter()
            .enumerate()
            .map(|(i, (a, _, r, _))| match share {
                Some(share) if i == 0 => share.gather(|cols, xa| tile(x, a, *r, cols.start, xa)),
                _ => {
                    let mut xa = vec![0f32; *r];
                    tile(x, a, *r, 0, &mut xa);
                    xa
                }
            })
            .collect();
        if let Some(b) = p.bias {
            out.iter_mut().zip(&b[j0..]).for_each(|(yj, bj)| *yj += bj);
        }
        // (`tile` zeroes `d` itself: no buffer at all without terms.)
        let mut d = vec![0f32; if p.terms.is_empty() { 0 } else { out.len() }];
        for ((_, b, _, scale), xa) in p.terms.iter().zip(&xas) {
            tile(xa, b, n, j0, &mut d);
            out.iter_mut()
                .zip(d.iter())
                .for_each(|(yj, dj)| *yj += dj * scale);
        }
    }
}

#[cfg(all(test, feature = "flex"))]
pub(crate) mod tests {
    use burn::prelude::*;

    use crate::backend::Flex;
    use crate::checkpoint::HostTensor;
    use crate::model::{Linear, LowRank, WeightDtype};

    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    pub(crate) fn layer(
        out: usize,
        k: usize,
        p: WeightDtype,
        seed: u32,
        ranks: &[usize],
    ) -> Linear<Flex> {
        layer_as(out, k, p, seed, ranks, false)
    }

    /// [`layer`], with its factors held in the weight's dtype when `round` (as a model loaded
    /// with an explicit weight dtype holds them) rather than in f32 (their random values are
    /// not exact in 16 bits).
    pub(crate) fn layer_as(
        out: usize,
        k: usize,
        p: WeightDtype,
        seed: u32,
        ranks: &[usize],
        round: bool,
    ) -> Linear<Flex> {
        let dev = Default::default();
        let w = HostTensor {
            shape: vec![out, k],
            data: values(out * k, seed),
        };
        let b = HostTensor {
            shape: vec![out],
            data: values(out, seed + 1),
        };
        let mut l = Linear::<Flex>::from_host(&w, Some(&b), p, &dev);
        l.set_round_merges(round);
        for (i, &r) in ranks.iter().enumerate() {
            let s = seed + 10 * (i as u32 + 1);
            l.push_update(LowRank {
                name: format!("a{i}").into(),
                a: Tensor::from_data(TensorData::new(values(k * r, s), [k, r]), &dev),
                b: Tensor::from_data(TensorData::new(values(r * out, s + 1), [r, out]), &dev),
                scale: 0.5 + i as f32,
                active: i != 1, // the second update is attached but switched off
                merged: false,
            });
        }
        l
    }

    /// Two layers run as a group give, bit for bit, what each gives alone — with biases, active
    /// and inactive low-rank terms, widths that are not whole tiles or panels, f32 and bf16, on
    /// one thread and on the pool.
    #[test]
    fn a_group_gives_each_layers_own_output() {
        for p in [WeightDtype::F32, WeightDtype::Bf16] {
            let (k, n1, n2) = (72, 200, 37);
            let a = layer(n1, k, p, 1, &[8, 4, 16]);
            let b = layer(n2, k, p, 2, &[]);
            let dev = Default::default();
            let x = Tensor::<Flex, 2>::from_data(TensorData::new(values(k, 3), [1, k]), &dev);
            let bits = |t: Tensor<Flex, 3>| -> Vec<u32> {
                let v = t.into_data().into_vec::<f32>().unwrap();
                v.iter().map(|v| v.to_bits()).collect()
            };
            let alone: Vec<u32> = [&a, &b]
                .iter()
                .flat_map(|l| bits(l.forward(x.clone().reshape([1, 1, k]))))
                .collect();
            let on_pool = crate::model::weight::on_pool::<Flex, _>(|| {
                Linear::one_row_group(&[&a, &b], &x).unwrap()
            });
            let serial = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| Linear::one_row_group(&[&a, &b], &x).unwrap());
            for got in [on_pool, serial] {
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, alone, "{p:?}");
            }
        }
    }

    /// One row through linears with low-rank terms (their first term's `x·A` computed in the
    /// weight pass and shared among the tiles) gives the bits of the several-row path, which
    /// computes every `x·A` apart: ranks below, at and above one group of 16, above what one
    /// pass takes (64) and split among threads; f32 and bf16 weights, factors in f32 and in
    /// the weight's dtype; on the pool and on one thread. With AVX-512 the shares were
    /// computed in the weight pass (published), not only after it.
    #[test]
    fn shared_x_a_gives_the_several_row_bits() {
        use std::sync::atomic::Ordering;
        let dev = Default::default();
        let published = super::share::PUBLISHED.load(Ordering::Relaxed);
        for (p, round) in [
            (WeightDtype::F32, false),
            (WeightDtype::Bf16, false),
            (WeightDtype::Bf16, true),
        ] {
            for (i, ranks) in [&[8, 4, 16][..], &[48], &[70, 16], &[130]]
                .iter()
                .enumerate()
            {
                let (k, n) = (72, 300);
                let l = layer_as(n, k, p, 20 + i as u32, ranks, round);
                let row = values(k, 9);
                let x = Tensor::<Flex, 2>::from_data(TensorData::new(row.clone(), [1, k]), &dev);
                let two = [row.clone(), row].concat();
                let x2 = Tensor::<Flex, 3>::from_data(TensorData::new(two, [1, 2, k]), &dev);
                let want: Vec<u32> = l.forward(x2).into_data().into_vec::<f32>().unwrap()[..n]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let on_pool = crate::model::weight::on_pool::<Flex, _>(|| {
                    Linear::one_row_group(&[&l], &x).unwrap()
                });
                let serial = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap()
                    .install(|| Linear::one_row_group(&[&l], &x).unwrap());
                for got in [on_pool, serial] {
                    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "{p:?} round {round} ranks {ranks:?}");
                }
            }
        }
        if crate::model::panels::in_pass() {
            assert!(super::share::PUBLISHED.load(Ordering::Relaxed) > published);
        }
    }

    /// A group refuses a layer whose LLaMA-Adapter correction is live (it is applied outside
    /// the kernels), and takes it once the correction is folded into the weight.
    #[test]
    fn a_live_affine_correction_is_left_to_the_caller() {
        let mut a = layer(40, 24, WeightDtype::F32, 5, &[]);
        let dev = Default::default();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(values(24, 6), [1, 24]), &dev);
        a.set_affine("v2".into(), vec![1.5; 40], vec![0.25; 40]);
        assert!(Linear::one_row_group(&[&a], &x).is_none());
        a.set_affine_merged(true);
        let got = Linear::one_row_group(&[&a], &x).unwrap();
        let want = a.forward(x.clone().reshape([1, 1, 24]));
        assert_eq!(got, want.into_data().into_vec::<f32>().unwrap());
    }
}

#[cfg(all(test, feature = "flex"))]
mod speed;
