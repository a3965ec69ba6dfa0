//! Criterion benchmarks of the hot paths on a SmolLM2-135M-shaped model (random f32 weights built
//! in memory, default CPU backend): one decode step (base, LoRA r16 on every linear kept separate,
//! merged), a 128-token prefill, switching between two loaded adapters, and merging + unmerging
//! one. Speed goals are ratios read side by side (`benches/compare.sh`, `benches/RESULTS.md`),
//! never timed tests.
//!
//! `cargo bench --profile dev --bench hot_paths` (add a filter such as `decode` to run a part).

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use graftlm::backend::DefaultCpu as B;
use graftlm::{KvCache, Mode, Model};

const PROMPT: usize = 16;

/// One greedy-free decode step after a `PROMPT`-token prefill; the cache is cut back after each
/// step so every step sees the same context length.
fn step(model: &Model<B>, cache: &mut KvCache<B>) {
    let l = model.forward(&[5], cache, true).unwrap();
    let _ = graftlm::generate::logits_to_vec(l).unwrap();
    cache.truncate(PROMPT);
}

fn primed(model: &Model<B>) -> KvCache<B> {
    let mut cache = model.new_cache(PROMPT + 1);
    let ids: Vec<u32> = (1..=PROMPT as u32).collect();
    let _ = model.forward(&ids, &mut cache, true).unwrap();
    cache
}

fn benches(c: &mut Criterion) {
    let cfg = common::smollm2_135m();
    let mut model = common::random_model::<B>(&cfg, 42);
    let (a, b) = (
        common::random_adapter(&cfg, 16, "a", 7),
        common::random_adapter(&cfg, 16, "b", 8),
    );

    let mut g = c.benchmark_group("decode_step");
    g.sample_size(20);
    let mut cache = primed(&model);
    g.bench_function("base", |bench| bench.iter(|| step(&model, &mut cache)));
    model.attach(&a, 1.0, Mode::Separate).unwrap();
    let mut cache = primed(&model);
    g.bench_function("lora_r16_separate", |bench| {
        bench.iter(|| step(&model, &mut cache))
    });
    model.set_merged("a", true).unwrap();
    let mut cache = primed(&model);
    g.bench_function("lora_r16_merged", |bench| {
        bench.iter(|| step(&model, &mut cache))
    });
    model.set_merged("a", false).unwrap();
    g.finish();

    let mut g = c.benchmark_group("prefill");
    g.sample_size(10);
    let long: Vec<u32> = (0..128u32).map(|i| 1 + i % 300).collect();
    let mut cache = model.new_cache(long.len());
    model.set_active("a", false).unwrap();
    g.bench_function("128_tokens", |bench| {
        bench.iter(|| {
            cache.clear();
            let l = model.forward(&long, &mut cache, true).unwrap();
            graftlm::generate::logits_to_vec(l).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("adapters");
    g.sample_size(10);
    model.attach(&b, 1.0, Mode::Separate).unwrap();
    let mut on_a = true;
    g.bench_function("switch_between_two_loaded", |bench| {
        bench.iter(|| {
            on_a = !on_a;
            model.set_active("a", on_a).unwrap();
            model.set_active("b", !on_a).unwrap();
        })
    });
    model.set_active("b", true).unwrap();
    g.bench_function("merge_then_unmerge", |bench| {
        bench.iter(|| {
            model.set_merged("b", true).unwrap();
            model.set_merged("b", false).unwrap();
        })
    });
    g.finish();
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
