//! Choosing the next token from a row of logits, in LitGPT's order: top-k → temperature → top-p →
//! softmax → multinomial draw; greedy (argmax) when `temperature` or `top_p` is 0.
//!
//! Runs on the host over the last position's logits, with a small seeded RNG so results are
//! reproducible across backends and platforms.

use crate::error::{Error, Result};

/// Sampling parameters. The default is `litgpt generate`'s (temperature 0.8, top-k 50, top-p 1,
/// seed 1234), as in the CLI, the C API and Python; [`SamplingParams::greedy`] always picks the
/// most likely token.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Nucleus threshold in `[0, 1]`; 1 keeps everything, 0 means greedy.
    pub top_p: f32,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// `litgpt generate`'s defaults: temperature 0.8, top-k 50, top-p 1, seed 1234.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: Some(50),
            top_p: 1.0,
            seed: 1234,
        }
    }
}

impl SamplingParams {
    /// The given parameters (see the fields; [`SamplingParams::validate`] checks them).
    pub fn new(temperature: f32, top_k: Option<usize>, top_p: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    /// Greedy decoding: the most likely token every step (temperature 0).
    pub fn greedy() -> Self {
        Self::new(0.0, None, 1.0, 1234)
    }

    /// Checks ranges (caller input).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(
                "temperature",
                format!("{} must be finite and >= 0", self.temperature),
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(Error::invalid(
                "top_p",
                format!("{} must be in [0, 1]", self.top_p),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top_k", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether this always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        !(self.temperature > 0.0 && self.top_p > 0.0)
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampler: parameters plus RNG state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

/// Index of the largest value (the first one on ties, as `torch.argmax`); NaN never wins.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in xs.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

impl Sampler {
    /// A sampler; fails on out-of-range parameters.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            rng: Rng::new(params.seed),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (one row, any length ≥ 1).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        if p.is_greedy() && !logits.iter().any(|v| v.is_nan()) {
            // The top-k filter keeps the first largest value (ties go to the lower index) and
            // lowers only others: the argmax is the same with or without it.
            return argmax(logits) as u32;
        }
        let mut l = logits.to_vec();
        if let Some(k) = p.top_k {
            if k < l.len() {
                // Keep the k largest values (ties broken by lower index), -inf the rest. A
                // strict total order: selecting the first k gives the same set as sorting.
                let mut idx: Vec<usize> = (0..l.len()).collect();
                if k > 0 {
                    idx.select_nth_unstable_by(k - 1, |&a, &b| {
                        l[b].total_cmp(&l[a]).then(a.cmp(&b))
                    });
                }
                for &i in &idx[k..] {
                    l[i] = f32::NEG_INFINITY;
                }
            }
        }
        if p.is_greedy() {
            return argmax(&l) as u32;
        }
        for v in l.iter_mut() {
            *v /= p.temperature;
        }
        if p.top_p < 1.0 {
            top_p_filter(&mut l, p.top_p);
        }
        let probs = softmax(&l);
        let u = self.rng.next_f64();
        let mut acc = 0.0f64;
        let mut last_positive = argmax(&probs);
        for (i, &q) in probs.iter().enumerate() {
            if q > 0.0 {
                acc += q as f64;
                last_positive = i;
                if u < acc {
                    return i as u32;
                }
            }
        }
        last_positive as u32
    }
}

/// Softmax in f64 accumulation; -inf entries get probability 0.
pub fn softmax(l: &[f32]) -> Vec<f32> {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        let mut out = vec![0.0; l.len()];
        if let Some(x) = out.get_mut(argmax(l)) {
            *x = 1.0;
        }
        return out;
    }
    // exp(-inf) is 0: entries dropped by top-k (most of a vocabulary) skip the call.
    let e: Vec<f64> = l
        .iter()
        .map(|&x| {
            if x == f32::NEG_INFINITY {
                0.0
            } else {
                ((x - m) as f64).exp()
            }
        })
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&x| (x / s) as f32).collect()
}

/// LitGPT `sample_top_p`: sort ascending, drop the tokens whose cumulative probability is
/// `<= 1 - top_p`, always keeping the most likely one.
fn top_p_filter(l: &mut [f32], top_p: f32) {
    // Entries already at -inf (dropped by top-k) would sort first with probability 0: they add
    // nothing to the cumulative sum and stay -inf, so only the others are sorted.
    let mut idx: Vec<usize> = (0..l.len())
        .filter(|&i| l[i] != f32::NEG_INFINITY)
        .collect();
    if idx.is_empty() {
        return;
    }
    idx.sort_by(|&a, &b| l[a].total_cmp(&l[b]).then(a.cmp(&b)));
    let sorted: Vec<f32> = idx.iter().map(|&i| l[i]).collect();
    let probs = softmax(&sorted);
    let mut cum = 0.0f32;
    let n = idx.len();
    for (rank, &i) in idx.iter().enumerate() {
        cum += probs[rank];
        if cum <= 1.0 - top_p && rank != n - 1 {
            l[i] = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: Option<usize>, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    /// A reference sampler that sorts the whole row: selection for top-k, the greedy shortcut
    /// and sorting only the entries top-k kept must pick the same tokens as it does.
    fn sample_by_sorting(p: SamplingParams, rng: &mut Rng, logits: &[f32]) -> u32 {
        let mut l = logits.to_vec();
        if let Some(k) = p.top_k.filter(|&k| k < l.len()) {
            let mut idx: Vec<usize> = (0..l.len()).collect();
            idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
            for &i in &idx[k..] {
                l[i] = f32::NEG_INFINITY;
            }
        }
        if p.is_greedy() {
            return argmax(&l) as u32;
        }
        for v in l.iter_mut() {
            *v /= p.temperature;
        }
        if p.top_p < 1.0 {
            let mut idx: Vec<usize> = (0..l.len()).collect();
            idx.sort_by(|&a, &b| l[a].total_cmp(&l[b]).then(a.cmp(&b)));
            let sorted: Vec<f32> = idx.iter().map(|&i| l[i]).collect();
            let probs = softmax(&sorted);
            let mut cum = 0.0f32;
            for (rank, &i) in idx.iter().enumerate() {
                cum += probs[rank];
                if cum <= 1.0 - p.top_p && rank != idx.len() - 1 {
                    l[i] = f32::NEG_INFINITY;
                }
            }
        }
        let probs = softmax(&l);
        let u = rng.next_f64();
        let mut acc = 0.0f64;
        let mut last = argmax(&probs);
        for (i, &q) in probs.iter().enumerate() {
            if q > 0.0 {
                acc += q as f64;
                last = i;
                if u < acc {
                    return i as u32;
                }
            }
        }
        last as u32
    }

    #[test]
    fn picks_what_sorting_everything_picks() {
        let mut seed = 99u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        };
        for (temperature, top_k, top_p) in [
            (0.0, Some(5), 1.0),
            (0.0, None, 1.0),
            (0.8, Some(50), 1.0),
            (1.0, Some(3), 0.9),
            (0.7, None, 0.5),
            (1.3, Some(1), 1.0),
            (0.9, Some(400), 0.95),
        ] {
            let p = params(temperature, top_k, top_p);
            let mut sampler = Sampler::new(p).unwrap();
            let mut rng = Rng::new(p.seed);
            for round in 0..60 {
                // Few distinct values (many ties), some -inf, now and then a NaN.
                let logits: Vec<f32> = (0..300)
                    .map(|i| match rnd() % 97 {
                        0 => f32::NEG_INFINITY,
                        1 if round % 7 == 3 && i % 50 == 7 => f32::NAN,
                        r => (r % 13) as f32 * 0.37 - 2.0,
                    })
                    .collect();
                assert_eq!(
                    sampler.sample(&logits),
                    sample_by_sorting(p, &mut rng, &logits),
                    "{p:?}, round {round}"
                );
            }
        }
    }

    #[test]
    fn greedy_picks_first_max() {
        let mut s = Sampler::new(params(0.0, None, 1.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
        // top_p = 0 is greedy too, whatever the temperature.
        let mut s = Sampler::new(params(5.0, None, 0.0)).unwrap();
        assert_eq!(s.sample(&[0.1, 2.0, 3.0]), 2);
    }

    #[test]
    fn top_k_one_is_deterministic() {
        let mut s = Sampler::new(params(1.5, Some(1), 1.0)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.5, 0.4, 0.6, 0.1]), 2);
        }
    }

    #[test]
    fn top_k_restricts_support() {
        let mut s = Sampler::new(params(1.0, Some(2), 1.0)).unwrap();
        for _ in 0..200 {
            let t = s.sample(&[1.0, 0.0, 1.1, 0.9]);
            assert!(t == 0 || t == 2, "sampled {t}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probs ≈ [0.64, 0.24, 0.09, 0.03]; top_p 0.7 keeps the two largest
        // (cumulative ascending: 0.03, 0.12, 0.36 <= 0.3? no: drop where cum <= 0.3).
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut l = logits.to_vec();
        top_p_filter(&mut l, 0.7);
        assert!(l[0].is_finite() && l[1].is_finite());
        assert!(l[2] == f32::NEG_INFINITY && l[3] == f32::NEG_INFINITY);
        let mut s = Sampler::new(params(1.0, None, 0.7)).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&logits) < 2);
        }
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_roughly_right() {
        let logits = [0.0f32, (3.0f32).ln()]; // probs 0.25 / 0.75
        let mut a = Sampler::new(params(1.0, None, 1.0)).unwrap();
        let mut b = Sampler::new(params(1.0, None, 1.0)).unwrap();
        let xs: Vec<u32> = (0..4000).map(|_| a.sample(&logits)).collect();
        let ys: Vec<u32> = (0..4000).map(|_| b.sample(&logits)).collect();
        assert_eq!(xs, ys);
        let ones = xs.iter().filter(|&&x| x == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "frequency {ones}");
    }

    #[test]
    fn temperature_sharpens() {
        let logits = [0.0f32, 1.0];
        let mut cold = Sampler::new(params(0.05, None, 1.0)).unwrap();
        assert!((0..200).all(|_| cold.sample(&logits) == 1));
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Sampler::new(params(-1.0, None, 1.0)).is_err());
        assert!(Sampler::new(params(f32::NAN, None, 1.0)).is_err());
        assert!(Sampler::new(params(1.0, None, 1.5)).is_err());
        assert!(Sampler::new(params(1.0, Some(0), 1.0)).is_err());
    }
}
