//! Decode speed on a SmolLM2-135M-shaped model (random f32 weights built in memory): tokens/s at
//! batch 1 for the base and with a rank-16 LoRA on every linear (separate and merged), next to the
//! machine's measured memory read bandwidth and the resulting ceiling (weight bytes / bandwidth).
//!
//! `cargo bench --profile dev --bench decode` (`GRAFTLM_DECODE_TOKENS`, default 64).
//! The side-by-side comparison with PyTorch lives in `benches/compare.sh`.

mod common;

use std::time::Instant;

use burn::prelude::Backend;
use graftlm::{Mode, Model};

fn decode_tps<B: Backend>(model: &Model<B>, prompt: usize, n: usize) -> f64 {
    let mut cache = model.new_cache(prompt + n + 1);
    let ids: Vec<u32> = (1..=prompt as u32).collect();
    let _ = model.forward(&ids, &mut cache, true).unwrap();
    let t = Instant::now();
    let mut tok = 5u32;
    for _ in 0..n {
        let l = model.forward(&[tok], &mut cache, true).unwrap();
        let v = graftlm::generate::logits_to_vec(l).unwrap();
        tok = graftlm::sampling::argmax(&v) as u32;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn run<B: Backend>(backend: &str, n: usize, gbps: f64) {
    let cfg = common::smollm2_135m();
    let weight_gb = cfg.parameter_count() as f64 * 4.0 / 1e9;
    let mut model = common::random_model::<B>(&cfg, 42);
    let base = decode_tps(&model, 16, n);
    let a = common::random_adapter(&cfg, 16, "a", 7);
    model.attach(&a, 1.0, Mode::Separate).unwrap();
    let sep = decode_tps(&model, 16, n);
    model.set_merged("a", true).unwrap();
    let merged = decode_tps(&model, 16, n);
    let ceiling = gbps / weight_gb;
    println!(
        "| {backend} | {base:.1} | {:.2} | {sep:.1} ({:.2}×) | {merged:.1} ({:.2}×) | {ceiling:.1} |",
        base / ceiling,
        sep / base,
        merged / base
    );
}

fn main() {
    let n: usize = std::env::var("GRAFTLM_DECODE_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let gbps = common::read_bandwidth_gbps();
    let cfg = common::smollm2_135m();
    println!(
        "SmolLM2-135M shape, f32 ({:.0} MB of weights); memory read probe {gbps:.1} GB/s; {} threads; {n} tokens after a 16-token prompt.",
        cfg.parameter_count() as f64 * 4.0 / 1e6,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!();
    println!("| backend | base tok/s | base / ceiling | LoRA r16 separate | LoRA merged | ceiling tok/s |");
    println!("|---|---|---|---|---|---|");
    #[cfg(feature = "flex")]
    run::<graftlm::backend::Flex>("flex", n, gbps);
    #[cfg(feature = "ndarray")]
    run::<graftlm::backend::NdArray>("ndarray", n, gbps);
}
