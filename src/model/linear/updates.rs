//! Attaching, merging, rescaling and removing a [`Linear`]'s low-rank updates.

use std::sync::Arc;

use burn::prelude::*;

use super::{Linear, LowRank, Update};
use crate::backend::ModelBackend;
use crate::kernels::panels::Layout;
use crate::model::precision::{as_f32, held_tensor, held_transposed, host_f32, WeightDtype};

impl<B: ModelBackend> Linear<B> {
    /// Attaches an update (kept separate, not merged). A layer whose weight is held in 16 bits
    /// holds `A` and `B` the same way when that changes no value (they are 16-bit values) or
    /// when 16 bits were asked for (rounded once here, as merges are; products still accumulate
    /// in f32), so a separately kept adapter streams half the bytes per token, as its base does.
    pub fn push_update(&mut self, mut u: LowRank<B>) {
        u.merged = false;
        if self.precision != WeightDtype::F32 {
            let (a, b) = (host_f32(&u.a), host_f32(&u.b));
            let p = self.factor_precision(&a, &b);
            if p != WeightDtype::F32 {
                let dev = u.a.device();
                u.a = held_tensor::<B>(a, u.a.dims(), p, &dev);
                u.b = held_tensor::<B>(b, u.b.dims(), p, &dev);
            }
        }
        self.updates.push(Update::LowRank(u));
    }

    /// Host factors as stored by trainers, `A` `[r, in]` and `B` `[out, r]` (row-major f32), as
    /// the tensors this layer multiplies: transposed to `[in, r]` and `[r, out]` and held as
    /// [`Linear::push_update`] says, in one pass each. Takes `&self` only, so the factors of
    /// many layers can be made in parallel and pushed with [`Linear::push_factors`].
    pub(crate) fn factors_of(
        &self,
        a: &[f32],
        b: &[f32],
        r: usize,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (k, n) = (self.in_features(), self.out_features());
        let dev = self.weight.device();
        let precision = self.factor_precision(a, b);
        let held = |d: &[f32], rows, cols| {
            let parts = [crate::checkpoint::Values::F32(d)];
            held_transposed::<B>(&parts, rows, cols, precision, Layout::Rows, &dev)
        };
        (held(a, r, k), held(b, n, r))
    }

    /// Attaches an update made by [`Linear::factors_of`] (kept separate, not merged).
    pub(crate) fn push_factors(
        &mut self,
        name: Arc<str>,
        (a, b): (Tensor<B, 2>, Tensor<B, 2>),
        scale: f32,
    ) {
        self.updates.push(Update::LowRank(LowRank {
            name,
            a,
            b,
            scale,
            active: true,
            merged: false,
        }));
    }

    /// How factors with values `a` and `b` are held (see [`Linear::push_update`]): at this
    /// layer's 16-bit precision when that changes no value or when 16 bits were asked for, else
    /// f32.
    fn factor_precision(&self, a: &[f32], b: &[f32]) -> WeightDtype {
        let exact = |v: &[f32]| {
            v.iter().all(|&x| {
                let mut r = [x];
                self.precision.round(&mut r);
                r[0].to_bits() == x.to_bits()
            })
        };
        if self.precision != WeightDtype::F32 && (self.round_merges || (exact(a) && exact(b))) {
            self.precision
        } else {
            WeightDtype::F32
        }
    }

    /// Detaches the update called `name`, taking it out of the weight first if merged.
    pub fn remove_update(&mut self, name: &str) -> Option<LowRank<B>> {
        self.low_rank_index(name)?;
        self.set_merged(name, false);
        let i = self.low_rank_index(name)?;
        match self.updates.remove(i) {
            Update::LowRank(u) => Some(u),
            Update::Affine(_) => None,
        }
    }

    /// Where the low-rank update called `name` lies in `updates`.
    fn low_rank_index(&self, name: &str) -> Option<usize> {
        self.updates
            .iter()
            .position(|u| matches!(u, Update::LowRank(l) if &*l.name == name))
    }

    /// The largest magnitude of the base weight, or a lower bound of it: a 16-bit weight keeps
    /// its base while merged; an f32 weight merged in place gives its largest magnitude less
    /// what its merged terms can add (so a merge cannot raise the limit for the next one).
    /// A full pass over the weight: called only for updates large enough to need it.
    pub(crate) fn max_abs_base(&self) -> f32 {
        let w = self.base.as_ref().unwrap_or(&self.weight);
        let w = match self.shape.layout.is_blocks() {
            true => self.rows_of(w),
            false => w.clone(),
        };
        let now = as_f32(&w).abs().max().into_scalar().elem::<f32>();
        if self.base.is_some() {
            return now;
        }
        let merged: f32 = self
            .low_rank()
            .filter(|u| u.merged)
            .map(|u| u.scale.abs() * factor_bound(&u.a, &u.b))
            .sum();
        (now - merged).max(0.0)
    }

    /// An upper bound of `max |A·B|` for the update called `name` (see
    /// `adapters::bounds::term_bound`), from the factors as held.
    pub(crate) fn update_bound(&self, name: &str) -> Option<f32> {
        let u = self.low_rank().find(|u| &*u.name == name)?;
        Some(factor_bound(&u.a, &u.b))
    }

    /// Mutable access to the update called `name`.
    pub fn update_mut(&mut self, name: &str) -> Option<&mut LowRank<B>> {
        self.updates.iter_mut().find_map(|u| match u {
            Update::LowRank(l) if &*l.name == name => Some(l),
            _ => None,
        })
    }

    fn delta(u: &LowRank<B>, scale: f32) -> Tensor<B, 2> {
        as_f32(&u.a).matmul(as_f32(&u.b)) * scale
    }

    /// Folds the update into the weight (`merged = true`) or takes it out again.
    /// Returns `false` when there is no such update.
    pub fn set_merged(&mut self, name: &str, merged: bool) -> bool {
        let Some(u) = self.low_rank().find(|u| &*u.name == name) else {
            return false;
        };
        if u.merged != merged {
            let (a, b, scale) = (u.a.clone(), u.b.clone(), u.scale);
            if self.precision != WeightDtype::F32 {
                self.mark_merged(name, merged);
                self.rebuild_merged();
                return true;
            }
            if !B::fold_low_rank(&mut self.weight, self.shape, &a, &b, scale, !merged) {
                let d = as_f32(&a).matmul(as_f32(&b)) * scale;
                let w = self.rows_of(&self.weight);
                self.weight = self.laid_out(if merged { w + d } else { w - d });
            }
            self.mark_merged(name, merged);
        }
        true
    }

    /// Records whether the update called `name` is folded into the weight.
    fn mark_merged(&mut self, name: &str, merged: bool) {
        if let Some(u) = self.update_mut(name) {
            u.merged = merged;
        }
    }

    /// A 16-bit weight: `round(base + Σ merged s·A·B)`, or the base itself when nothing is
    /// merged.
    fn rebuild_merged(&mut self) {
        if !self.low_rank().any(|u| u.merged) {
            if let Some(b) = self.base.take() {
                self.weight = b;
            }
            return;
        }
        let base = self.base.get_or_insert_with(|| self.weight.clone()).clone();
        let terms: Vec<_> = self
            .low_rank()
            .filter(|u| u.merged)
            .map(|u| (&u.a, &u.b, u.scale))
            .collect();
        // On the host, panel by panel, where the backend can; else burn's ops on an f32
        // row-major copy.
        if let Some(w) = B::merged_16(&base, self.shape, &terms, self.round_merges) {
            self.weight = w;
            return;
        }
        let mut w = as_f32(&self.rows_of(&base));
        for u in self.low_rank().filter(|u| u.merged) {
            w = w + Self::delta(u, u.scale);
        }
        self.weight = self.hold(w);
    }

    /// Changes the run-time scale of an update, adjusting the weight if it is merged.
    pub fn set_scale(&mut self, name: &str, scale: f32) -> bool {
        let Some(u) = self.low_rank().find(|u| &*u.name == name) else {
            return false;
        };
        let rescale = u.merged && u.scale != scale;
        if rescale && self.precision == WeightDtype::F32 {
            let d = Self::delta(u, scale - u.scale);
            self.weight = self.laid_out(self.rows_of(&self.weight) + d);
        }
        if let Some(u) = self.update_mut(name) {
            u.scale = scale;
        }
        if rescale && self.precision != WeightDtype::F32 {
            self.rebuild_merged();
        }
        true
    }
}

/// `max|A| · max_o Σ_k |B[k, o]|` for factors as held (`A` `[in, r]`, `B` `[r, out]`): an upper
/// bound of `max |A·B|`.
fn factor_bound<B: ModelBackend>(a: &Tensor<B, 2>, b: &Tensor<B, 2>) -> f32 {
    let a = as_f32(a).abs().max().into_scalar().elem::<f32>();
    let b = as_f32(b).abs().sum_dim(0).max().into_scalar().elem::<f32>();
    a * b
}
