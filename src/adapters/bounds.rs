//! Refusing LoRA updates whose merge cannot be undone.
//!
//! An f32 weight merged in place (`W += s·ΔW`) is restored by subtracting the same term. That
//! gives the base back (to its last bits) only while `s·ΔW` stays within a few orders of
//! magnitude of `W`: a term 2^8 times the largest base weight keeps 16 of the base's 24 bits, and
//! beyond that the base is lost (a scale of 1e10 leaves nothing of it). Trained adapters are
//! orders of magnitude below the limit; only a broken `lora_alpha` or an absurd scale reaches it.

use super::lora::LowRankUpdate;
use super::{Adapter, AdapterFormat};
use crate::error::{Error, Result};

/// How many times the largest base weight a merged term may reach.
pub(crate) const MAX_TERM_RATIO: f32 = 256.0;

/// An upper bound of `max |ΔW|` for `ΔW = B·A` (`A` `[r, in]`, `B` `[out, r]`, row-major):
/// `max|A| · max_o Σ_k |B[o, k]|`. Cheap (one pass over the factors), never below the truth;
/// infinite when any factor value is not finite (`f32::max` would skip a NaN).
pub(crate) fn term_bound(u: &LowRankUpdate) -> f32 {
    if u.a.data.iter().chain(&u.b.data).any(|x| !x.is_finite()) {
        return f32::INFINITY;
    }
    let a = u.a.data.iter().fold(0f32, |m, x| m.max(x.abs()));
    let r = u.rank().max(1);
    let b =
        u.b.data
            .chunks(r)
            .map(|row| row.iter().map(|x| x.abs()).sum::<f32>())
            .fold(0f32, f32::max);
    a * b
}

/// Refuses `scale` times an update bounded by `bound` on linear `lin_name` (whose base weights
/// reach `max_abs_base()`, only asked when needed) when merging it could not be
/// undone: naming the adapter file and `lora_alpha` when the stored update alone is too large
/// (`adapter` given: at attach), else the `scale` argument.
pub(crate) fn check_term(
    adapter: Option<&Adapter>,
    lin_name: &str,
    max_abs_base: impl FnOnce() -> f32,
    bound: f32,
    scale: f32,
) -> Result<()> {
    let term = bound * scale.abs();
    // Terms up to 1 are always undone to within f32 rounding of 1; no need to look at `W`.
    if term.is_finite() && term <= 1.0 {
        return Ok(());
    }
    let limit = MAX_TERM_RATIO * max_abs_base().max(1.0 / MAX_TERM_RATIO);
    if term.is_finite() && term <= limit {
        return Ok(());
    }
    let what = format!(
        "updates of `{lin_name}` reach {term:e}, more than {MAX_TERM_RATIO} times its largest \
         base weight ({limit:e} allowed): merging them could not be undone"
    );
    match adapter {
        Some(a) if !bound.is_finite() || bound > limit => Err(Error::UnsupportedConfig {
            // The file that holds `lora_alpha` (the weights file for formats without one).
            path: match a.format {
                AdapterFormat::PeftLora => a.dir.join("adapter_config.json"),
                AdapterFormat::LitGptLora => a.dir.join("hyperparameters.yaml"),
                _ => a.path.clone(),
            },
            field: "lora_alpha".into(),
            msg: format!("alpha {} with r {}: {what}", a.alpha, a.r),
        }),
        _ => Err(Error::invalid("scale", format!("{scale}: {what}"))),
    }
}
