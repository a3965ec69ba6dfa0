//! Adapter operations and decoding on a SmolLM2-135M-shaped model (random weights, built in
//! memory): attach, swap, merge, unmerge, detach, and decode speed for base / separate / merged,
//! on every compiled CPU backend. Prints a table; compare ratios within one run.
//!
//! `cargo bench --profile dev --bench adapters --features ndarray` (dependencies are optimised in
//! the dev profile; `--profile release` for a full release build).

mod common;

use std::time::Instant;

use common::{random_adapter_with as random_adapter, random_tensors, smollm2_135m, Lcg};
use graftlm::backend::ModelBackend;
use graftlm::{Mode, Model};

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// One run of `n` greedy tokens after a 4-token prompt.
fn decode_tps<B: ModelBackend>(model: &Model<B>, n: usize) -> f64 {
    common::decode_tps(model, 4, n)
}

fn run<B: ModelBackend>(backend: &str) {
    let cfg = smollm2_135m();
    let mut rng = Lcg(42);
    let device = B::Device::default();
    let t = Instant::now();
    let mut model =
        Model::<B>::from_tensors(cfg.clone(), random_tensors(&cfg, &mut rng), &device).unwrap();
    let build = t.elapsed().as_secs_f64() * 1e3;
    let a = random_adapter(&cfg, 16, "a", &mut rng);
    let b = random_adapter(&cfg, 16, "b", &mut rng);
    let mb = a.parameter_count() as f64 * 4.0 / 1e6;
    let n = 32;
    let base_tps = decode_tps(&model, n);
    let attach = ms(|| model.attach(&a, 1.0, Mode::Separate).unwrap());
    let attach_b = ms(|| model.attach(&b, 1.0, Mode::Separate).unwrap());
    let swap = ms(|| model.activate_only("a").unwrap());
    let sep_tps = decode_tps(&model, n);
    let merge = ms(|| model.set_merged("a", true).unwrap());
    let merged_tps = decode_tps(&model, n);
    let unmerge = ms(|| model.set_merged("a", false).unwrap());
    let detach = ms(|| model.detach("b").unwrap());
    println!("| {backend} | {build:.0} | {mb:.1} | {attach:.1} / {attach_b:.1} | {swap:.3} | {merge:.1} | {unmerge:.1} | {detach:.2} | {base_tps:.1} | {sep_tps:.1} ({:.2}×) | {merged_tps:.1} ({:.2}×) |",
        sep_tps / base_tps, merged_tps / base_tps);
}

fn main() {
    println!("SmolLM2-135M shape (30 layers, 576 wide, GQA 9/3, vocab 49152, f32), LoRA r16 on all linears but the head.");
    println!(
        "Times in ms; decode in tokens/s (batch 1, {} threads available).",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!("| backend | build model | adapter MB (stored) | attach a / b | swap | merge | unmerge | detach | decode base | decode separate | decode merged |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    #[cfg(feature = "flex")]
    run::<graftlm::backend::Flex>("flex");
    #[cfg(feature = "ndarray")]
    run::<graftlm::backend::NdArray>("ndarray");
}
