//! `Linear<B>`: `y = x·Wᵀ + b (+ Σ s·(x·A)·B)`, the one seam where adapters enter the model.
//!
//! The weight is kept as `[in, out]` (the transpose of the checkpoint's `[out, in]`) so the
//! forward pass is a plain matmul on every backend. Low-rank updates are kept beside the weight
//! (computed as `(x·A)·B`, never by rebuilding `W`) or folded into it and taken out again.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use super::matvec::{try_linear, RowTerm};
use super::precision::{as_f32, held_tensor, held_transposed, host_f32, WeightDtype};
use crate::checkpoint::HostTensor;

/// A low-rank update `s·A·B` attached to a [`Linear`] under a name.
#[derive(Debug, Clone)]
pub struct LowRank<B: Backend> {
    /// The name of the adapter it belongs to.
    pub name: Arc<str>,
    /// `[in, r]`.
    pub a: Tensor<B, 2>,
    /// `[r, out]` (any per-row scaling already folded in).
    pub b: Tensor<B, 2>,
    /// Multiplier applied at run time.
    pub scale: f32,
    /// Whether it contributes to the output.
    pub active: bool,
    /// Whether `scale·A·B` is currently added into the weight.
    pub merged: bool,
}

/// A per-output affine correction `y ← scale ⊙ (y + bias)` (LLaMA-Adapter v2).
#[derive(Debug, Clone)]
pub struct Affine<B: Backend> {
    pub name: Arc<str>,
    /// `[out]`.
    pub scale: Tensor<B, 1>,
    /// `[out]`.
    pub bias: Tensor<B, 1>,
    pub active: bool,
    /// The base weight and bias while the correction is folded into them.
    saved: Option<(Tensor<B, 2>, Option<Tensor<B, 1>>)>,
}

/// A dense linear layer.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[in, out]`, held at `precision`.
    weight: Tensor<B, 2>,
    /// `[out]`.
    bias: Option<Tensor<B, 1>>,
    updates: Vec<LowRank<B>>,
    affine: Option<Affine<B>>,
    /// F32, Bf16 or F16 (never Auto).
    precision: WeightDtype,
    /// A 16-bit weight's base while updates are merged into it: merging rounds `W + ΔW` to the
    /// held precision (as PEFT and LitGPT do for 16-bit models), unmerging restores this exactly.
    base: Option<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    /// Builds the layer from a checkpoint weight stored `[out, in]` and an optional bias `[out]`,
    /// holding the weight at `precision` (`Auto` counts as f32).
    pub fn from_host(
        weight: &HostTensor,
        bias: Option<&HostTensor>,
        precision: WeightDtype,
        device: &B::Device,
    ) -> Self {
        let (out, inp) = (weight.shape[0], weight.shape[1]);
        let precision = match precision {
            WeightDtype::Auto => WeightDtype::F32,
            p => p,
        };
        let weight = held_transposed::<B>(&weight.data, out, inp, precision, device);
        let bias = bias.map(|b| Tensor::from_data(TensorData::new(b.data.clone(), [out]), device));
        Self {
            weight,
            bias,
            updates: Vec::new(),
            affine: None,
            precision,
            base: None,
        }
    }

    /// How the weight is held (never `Auto`).
    pub fn precision(&self) -> WeightDtype {
        self.precision
    }

    /// An f32 weight `[in, out]` held as this layer holds its weight.
    fn hold(&self, w: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.precision == WeightDtype::F32 {
            return w;
        }
        let dims = w.dims();
        held_tensor::<B>(host_f32(&w), dims, self.precision, &w.device())
    }

    /// The weight as f32 `[in, out]` (a cheap clone when held as f32).
    pub fn weight_f32(&self) -> Tensor<B, 2> {
        as_f32(&self.weight)
    }

    /// Installs an affine correction (kept separate until [`Linear::set_affine_merged`]).
    pub fn set_affine(&mut self, name: Arc<str>, scale: Vec<f32>, bias: Vec<f32>) {
        self.remove_affine();
        let dev = self.weight.device();
        let n = scale.len();
        self.affine = Some(Affine {
            name,
            scale: Tensor::from_data(TensorData::new(scale, [n]), &dev),
            bias: Tensor::from_data(TensorData::new(bias, [n]), &dev),
            active: true,
            saved: None,
        });
    }

    /// Removes the affine correction (restoring the exact base weights if it was folded in).
    pub fn remove_affine(&mut self) -> Option<Affine<B>> {
        self.set_affine_merged(false);
        self.affine.take()
    }

    /// The affine correction, if any.
    pub fn affine_mut(&mut self) -> Option<&mut Affine<B>> {
        self.affine.as_mut()
    }

    /// Folds the affine correction into weight and bias (exactly restorable) or takes it out.
    pub fn set_affine_merged(&mut self, merged: bool) {
        let Some(af) = self.affine.as_mut() else {
            return;
        };
        match (merged, af.saved.is_some()) {
            (true, false) => {
                let (w, b) = (self.weight.clone(), self.bias.clone());
                let s = af.scale.clone();
                let scaled = as_f32(&w) * s.clone().unsqueeze_dim::<2>(0);
                let af_bias = af.bias.clone();
                let b_plus = match &b {
                    Some(b) => b.clone() + af_bias,
                    None => af_bias,
                };
                af.saved = Some((w, b));
                self.bias = Some(b_plus * s);
                self.weight = self.hold(scaled);
            }
            (false, true) => {
                if let Some((w, b)) = af.saved.take() {
                    self.weight = w;
                    self.bias = b;
                }
            }
            _ => {}
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The weight, `[in, out]` (including merged updates), as held: f32, or bf16 / f16 on
    /// backends that keep 16-bit weights (see [`Linear::weight_f32`]).
    pub fn weight(&self) -> &Tensor<B, 2> {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }

    /// The attached low-rank updates.
    pub fn updates(&self) -> &[LowRank<B>] {
        &self.updates
    }

    /// Attaches an update (kept separate, not merged).
    pub fn push_update(&mut self, mut u: LowRank<B>) {
        u.merged = false;
        self.updates.push(u);
    }

    /// Detaches the update called `name`, taking it out of the weight first if merged.
    pub fn remove_update(&mut self, name: &str) -> Option<LowRank<B>> {
        let i = self.updates.iter().position(|u| &*u.name == name)?;
        self.set_merged(name, false);
        Some(self.updates.remove(i))
    }

    /// Mutable access to the update called `name`.
    pub fn update_mut(&mut self, name: &str) -> Option<&mut LowRank<B>> {
        self.updates.iter_mut().find(|u| &*u.name == name)
    }

    fn delta(u: &LowRank<B>, scale: f32) -> Tensor<B, 2> {
        u.a.clone().matmul(u.b.clone()) * scale
    }

    /// Folds the update into the weight (`merged = true`) or takes it out again.
    /// Returns `false` when there is no such update.
    pub fn set_merged(&mut self, name: &str, merged: bool) -> bool {
        let Some(i) = self.updates.iter().position(|u| &*u.name == name) else {
            return false;
        };
        let u = &self.updates[i];
        if u.merged != merged {
            if self.precision != WeightDtype::F32 {
                self.updates[i].merged = merged;
                self.rebuild_merged();
                return true;
            }
            let d = Self::delta(u, u.scale);
            self.weight = if merged {
                self.weight.clone() + d
            } else {
                self.weight.clone() - d
            };
            self.updates[i].merged = merged;
        }
        true
    }

    /// A 16-bit weight: `round(base + Σ merged s·A·B)`, or the base itself when nothing is merged.
    fn rebuild_merged(&mut self) {
        if !self.updates.iter().any(|u| u.merged) {
            if let Some(b) = self.base.take() {
                self.weight = b;
            }
            return;
        }
        let base = self.base.get_or_insert_with(|| self.weight.clone()).clone();
        let mut w = as_f32(&base);
        for u in self.updates.iter().filter(|u| u.merged) {
            w = w + Self::delta(u, u.scale);
        }
        self.weight = self.hold(w);
    }

    /// Changes the run-time scale of an update, adjusting the weight if it is merged.
    pub fn set_scale(&mut self, name: &str, scale: f32) -> bool {
        let Some(i) = self.updates.iter().position(|u| &*u.name == name) else {
            return false;
        };
        let u = &self.updates[i];
        let rescale = u.merged && u.scale != scale;
        if rescale && self.precision == WeightDtype::F32 {
            let d = Self::delta(u, scale - u.scale);
            self.weight = self.weight.clone() + d;
        }
        self.updates[i].scale = scale;
        if rescale && self.precision != WeightDtype::F32 {
            self.rebuild_merged();
        }
        true
    }

    /// `x`: `[b, t, in]` → `[b, t, out]`, with every active update.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_rows(x, None)
    }

    /// [`Linear::forward`] where each of the `b·t` rows may use its own update: with `rows`, row
    /// `i` gets the separately kept updates named `rows[i]` (none for `None`), whatever their
    /// `active` flag; merged updates are in the weight and apply to every row.
    pub fn forward_rows(&self, x: Tensor<B, 3>, rows: Option<RowGrafts<'_>>) -> Tensor<B, 3> {
        let [b, t, i] = x.dims();
        let x2 = x.reshape([b * t, i]);
        let applies = |u: &LowRank<B>| !u.merged && u.scale != 0.0 && (rows.is_some() || u.active);
        // Row lists per update (`None`: every row).
        let lists: Vec<(&LowRank<B>, Option<Vec<usize>>)> = self
            .updates
            .iter()
            .filter(|u| applies(u))
            .filter_map(|u| match rows {
                None => Some((u, None)),
                Some(sel) => {
                    let idx: Vec<usize> = (0..b * t)
                        .filter(|&r| sel.get(r).copied().flatten() == Some(&*u.name))
                        .collect();
                    if idx.is_empty() {
                        None
                    } else if idx.len() == b * t {
                        Some((u, None))
                    } else {
                        Some((u, Some(idx)))
                    }
                }
            })
            .collect();
        let terms: Vec<RowTerm<'_, B>> = lists
            .iter()
            .map(|(u, idx)| RowTerm {
                a: &u.a,
                b: &u.b,
                scale: u.scale,
                rows: idx.as_deref(),
            })
            .collect();
        let mut y = match try_linear(&x2, &self.weight, self.bias.as_ref(), &terms) {
            Some(y) => y,
            None => {
                let mut y = x2.clone().matmul(self.weight_f32());
                if let Some(bias) = &self.bias {
                    y = y + bias.clone().unsqueeze_dim::<2>(0);
                }
                for (u, idx) in &lists {
                    y = match idx {
                        None => y + x2.clone().matmul(u.a.clone()).matmul(u.b.clone()) * u.scale,
                        Some(idx) => {
                            let ids: Vec<i64> = idx.iter().map(|&r| r as i64).collect();
                            let ids = Tensor::<B, 1, Int>::from_data(
                                TensorData::new(ids, [idx.len()]),
                                &x2.device(),
                            );
                            let d = x2.clone().select(0, ids.clone()).matmul(u.a.clone());
                            let d = d.matmul(u.b.clone()) * u.scale;
                            y.select_assign(0, ids, d, IndexingUpdateOp::Add)
                        }
                    };
                }
                y
            }
        };
        if let Some(af) = self
            .affine
            .as_ref()
            .filter(|a| a.active && a.saved.is_none() && rows.is_none())
        {
            y = (y + af.bias.clone().unsqueeze_dim::<2>(0))
                * af.scale.clone().unsqueeze_dim::<2>(0);
        }
        y.reshape([b, t, self.out_features()])
    }
}

/// Which separately kept updates each row of a batch uses (see [`Linear::forward_rows`]): the
/// name of one graft, or `None` for the base alone.
pub type RowGrafts<'a> = &'a [Option<&'a str>];

/// `[rows, cols]` row-major → `[cols, rows]` row-major, in 32×32 blocks (cache-friendly for the
/// large matrices a load transposes); bands of 32 output rows run in parallel on rayon's threads.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for_bands(&mut t, rows, |bi, out| band(data, rows, cols, bi, out));
    t
}

/// [`transpose`] straight into another element type: each band of 32 output rows is transposed
/// into a scratch buffer and then `map`ped into the output (no full-size f32 copy).
pub(crate) fn transpose_map<T: Copy + Default + Send>(
    data: &[f32],
    rows: usize,
    cols: usize,
    map: impl Fn(&[f32], &mut [T]) + Sync,
) -> Vec<T> {
    let mut t = vec![T::default(); rows * cols];
    for_bands(&mut t, rows, |bi, out| {
        let mut scratch = vec![0f32; out.len()];
        band(data, rows, cols, bi, &mut scratch);
        map(&scratch, out);
    });
    t
}

const BLOCK: usize = 32;

/// Runs `f(band index, band)` over bands of `BLOCK` output rows (`rows` wide) of `t`, in parallel
/// for large matrices.
fn for_bands<T: Send>(t: &mut [T], rows: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if t.is_empty() {
        return;
    }
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        if t.len() >= 1 << 16 {
            t.par_chunks_mut(BLOCK * rows)
                .enumerate()
                .for_each(|(bi, out)| f(bi, out));
            return;
        }
    }
    t.chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(bi, out)| f(bi, out));
}

/// Output rows `bi·32 ..` (input columns `c0..c1`) of the transpose of `data` into `out`.
fn band(data: &[f32], rows: usize, cols: usize, bi: usize, out: &mut [f32]) {
    let c0 = bi * BLOCK;
    let c1 = (c0 + BLOCK).min(cols);
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        #[cfg(target_arch = "x86_64")]
        if c1 - c0 == BLOCK && r1 - r0 == BLOCK && std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present; the 32×32 block lies inside `data` (rows r0..r1,
            // columns c0..c1) and inside `out` (its rows 0..32, columns r0..r1).
            unsafe { x86::block32(data, cols, out, rows, r0, c0) };
            continue;
        }
        for r in r0..r1 {
            let src = &data[r * cols + c0..r * cols + c1];
            for (c, &v) in src.iter().enumerate() {
                out[c * rows + r] = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Transposes the 32×32 block at rows `r0..`, columns `c0..` of `data` (`cols` wide) into
    /// rows `0..32`, columns `r0..` of `out` (`rows` wide), as 16 in-register 8×8 transposes.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn block32(
        data: &[f32],
        cols: usize,
        out: &mut [f32],
        rows: usize,
        r0: usize,
        c0: usize,
    ) {
        debug_assert!(
            (r0 + 32 - 1) * cols + c0 + 32 <= data.len() && 31 * rows + r0 + 32 <= out.len()
        );
        let src = data.as_ptr();
        let dst = out.as_mut_ptr();
        for bi in (0..32).step_by(8) {
            for bj in (0..32).step_by(8) {
                let p = src.add((r0 + bi) * cols + c0 + bj);
                let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(i * cols)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let o = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                let q = dst.add(bj * rows + r0 + bi);
                for (i, v) in o.iter().enumerate() {
                    _mm256_storeu_ps(q.add(i * rows), *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_any_shape() {
        for (rows, cols) in [
            (1, 1),
            (1, 70),
            (33, 1),
            (31, 65),
            (64, 64),
            (100, 37),
            (96, 130),
            (300, 576),
        ] {
            let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = super::transpose(&data, rows, cols);
            let neg = super::transpose_map(&data, rows, cols, |a: &[f32], b: &mut [i64]| {
                a.iter().zip(b).for_each(|(x, y)| *y = -(*x as i64))
            });
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        data[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                    assert_eq!(neg[c * rows + r], -((r * cols + c) as i64));
                }
            }
        }
    }
}
