//! Adapter operations and decoding on a SmolLM2-135M-shaped model (random weights, built in
//! memory): attach, swap, merge, unmerge, detach, and decode speed for base / separate / merged,
//! on every compiled CPU backend. Prints a table; compare ratios within one run.
//!
//! `cargo bench --profile dev --bench adapters --features ndarray` (dependencies are optimised in
//! the dev profile; `--profile release` for a full release build).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use burn::prelude::Backend;
use graftlm::adapters::{AdapterFormat, LowRankUpdate};
use graftlm::checkpoint::{names, HostTensor};
use graftlm::config::{Family, MlpKind, ModelConfig, NormKind};
use graftlm::{Adapter, Mode, Model};

fn smollm2_135m() -> ModelConfig {
    ModelConfig {
        name: "SmolLM2-135M-shape".into(),
        family: Family::HfLlama,
        block_size: 2048,
        n_layer: 30,
        n_embd: 576,
        n_head: 9,
        head_size: 64,
        n_query_groups: 3,
        padded_vocab_size: 49152,
        norm: NormKind::RmsNorm { unit_offset: false },
        norm_eps: 1e-5,
        mlp: MlpKind::Llama,
        intermediate_size: 1536,
        gelu_tanh: false,
        qkv_bias: false,
        attn_out_bias: false,
        mlp_bias: false,
        lm_head_bias: false,
        parallel_residual: false,
        shared_attention_norm: false,
        rope_n_elem: 64,
        rope_base: 100000.0,
        rope_condense_ratio: 1,
        rope_scaling: None,
        scale_embeddings: false,
        tie_embeddings: true,
        sliding_window: None,
        norm_qk: false,
        extras: Default::default(),
    }
}

struct Lcg(u64);
impl Lcg {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
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

fn random_tensors(cfg: &ModelConfig, rng: &mut Lcg) -> HashMap<String, HostTensor> {
    names::table(cfg)
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

fn random_adapter(cfg: &ModelConfig, r: usize, name: &str, rng: &mut Lcg) -> Adapter {
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

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn decode_tps<B: Backend>(model: &Model<B>, n: usize) -> f64 {
    let mut cache = model.new_cache(n + 8);
    let _ = model.forward(&[1, 2, 3, 4], &mut cache, true).unwrap();
    let t = Instant::now();
    let mut tok = 5u32;
    for _ in 0..n {
        let l = model.forward(&[tok], &mut cache, true).unwrap();
        let v = graftlm::generate::logits_to_vec(l).unwrap();
        tok = graftlm::sampling::argmax(&v) as u32;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn run<B: Backend>(backend: &str) {
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
