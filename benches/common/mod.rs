//! Shared by the benches: the SmolLM2-135M shape, random weights and adapters built in memory, a
//! greedy decoding timer and a memory read-bandwidth probe.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use graftlm::adapters::{AdapterFormat, LowRankUpdate};
use graftlm::backend::ModelBackend;
use graftlm::checkpoint::{names, HostTensor};
use graftlm::config::{Family, MlpKind, ModelConfig, NormKind};
use graftlm::{Adapter, Model};

pub fn smollm2_135m() -> ModelConfig {
    // Every field set here; the llama fixture only supplies a value to start from
    // (`ModelConfig` is `#[non_exhaustive]`: built by its readers, changed field by field).
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/llama/hf"
    );
    let mut c = ModelConfig::from_dir(std::path::Path::new(fixture)).expect("llama fixture");
    c.name = "SmolLM2-135M-shape".into();
    c.family = Family::HfLlama;
    c.block_size = 2048;
    c.n_layer = 30;
    c.n_embd = 576;
    c.n_head = 9;
    c.head_size = 64;
    c.n_query_groups = 3;
    c.padded_vocab_size = 49152;
    c.norm = NormKind::RmsNorm { unit_offset: false };
    c.norm_eps = 1e-5;
    c.mlp = MlpKind::Llama;
    c.intermediate_size = 1536;
    c.gelu_tanh = false;
    c.qkv_bias = false;
    c.attn_out_bias = false;
    c.mlp_bias = false;
    c.lm_head_bias = false;
    c.parallel_residual = false;
    c.shared_attention_norm = false;
    c.rope_n_elem = 64;
    c.rope_base = 100000.0;
    c.rope_condense_ratio = 1;
    c.rope_scaling = None;
    c.scale_embeddings = false;
    c.tie_embeddings = true;
    c.sliding_window = None;
    c.norm_qk = false;
    c.extras = Default::default();
    c
}

pub struct Lcg(pub u64);
impl Lcg {
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }
}

pub fn random_tensors(cfg: &ModelConfig, rng: &mut Lcg) -> HashMap<String, HostTensor> {
    names::table(cfg)
        .expect("a name table for the bench shape")
        .into_iter()
        .map(|e| {
            let n: usize = e.shape.iter().product();
            let scale = if e.shape.len() == 1 { 0.0 } else { 0.1 };
            let mut data = rng.vec(n, scale);
            if e.shape.len() == 1 {
                data.iter_mut().for_each(|x| *x = 1.0);
            }
            (
                e.name,
                HostTensor {
                    shape: e.shape,
                    data,
                },
            )
        })
        .collect()
}

pub fn random_adapter_with(cfg: &ModelConfig, r: usize, name: &str, rng: &mut Lcg) -> Adapter {
    let mut updates = BTreeMap::new();
    for (lin, [out, inp]) in names::linears(cfg) {
        if lin == "lm_head" {
            continue;
        }
        updates.insert(
            lin,
            LowRankUpdate {
                a: HostTensor {
                    shape: vec![r, inp],
                    data: rng.vec(r * inp, 0.1),
                },
                b: HostTensor {
                    shape: vec![out, r],
                    data: rng.vec(out * r, 0.01),
                },
            },
        );
    }
    Adapter {
        name: name.into(),
        format: AdapterFormat::PeftLora,
        path: "random".into(),
        dir: "random".into(),
        step: None,
        recorded_base: None,
        r,
        alpha: r as f64,
        updates,
        llama: Default::default(),
    }
}

/// A random-weight model of shape `cfg`.
pub fn random_model<B: ModelBackend>(cfg: &ModelConfig, seed: u64) -> Model<B> {
    let mut rng = Lcg(seed);
    Model::<B>::from_tensors(
        cfg.clone(),
        random_tensors(cfg, &mut rng),
        &B::Device::default(),
    )
    .unwrap()
}

/// A random rank-`r` LoRA on every linear but the head.
pub fn random_adapter(cfg: &ModelConfig, r: usize, name: &str, seed: u64) -> Adapter {
    random_adapter_with(cfg, r, name, &mut Lcg(seed))
}

/// Memory read bandwidth in GB/s: every thread sums its share of a 512 MiB buffer (4 passes,
/// best of them), vectorised by the compiler.
pub fn read_bandwidth_gbps() -> f64 {
    let n = 128 << 20; // f32s
    let v = vec![1.0f32; n];
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    let mut best = 0f64;
    for _ in 0..4 {
        let t = std::time::Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let hs: Vec<_> = v
                .chunks(n.div_ceil(threads))
                .map(|c| s.spawn(move || sum(c)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(total);
        best = best.max((n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Sum with 16 independent accumulators (lets the compiler use full-width vector adds).
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Tokens/s of `n` greedy tokens decoded one at a time after a `prompt`-token prefill (one run).
pub fn decode_tps<B: ModelBackend>(model: &Model<B>, prompt: usize, n: usize) -> f64 {
    let mut cache = model.new_cache(prompt + n + 1);
    let ids: Vec<u32> = (1..=prompt as u32).collect();
    let _ = model.forward(&ids, &mut cache, true).unwrap();
    let t = std::time::Instant::now();
    let mut tok = 5u32;
    for _ in 0..n {
        let l = model.forward(&[tok], &mut cache, true).unwrap();
        let v = graftlm::generate::logits_to_vec(l).unwrap();
        tok = graftlm::sampling::argmax(&v) as u32;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}
