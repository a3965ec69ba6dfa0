//! Several sequences, each with its own LoRA adapter (S-LoRA / Punica style), decoded in one
//! forward per step (`Model::forward_batch`) against the same sequences one after another (each
//! with `activate_only` on its adapter). SmolLM2-135M shape, random f32 weights, rank-16 LoRA on
//! every linear, one adapter per sequence. Issue 8's target: ≥ 4× the throughput for 8 sequences.
//!
//! `cargo bench --profile dev --bench batch` (`GRAFTLM_DECODE_TOKENS`, default 32;
//! `GRAFTLM_BATCH`, default 8; `GRAFTLM_BATCH_ONLY=1` skips the one-after-another run, for
//! profiling). Prints decode-step throughput both ways and the same including the prompts:
//! medians of `GRAFTLM_BENCH_ROUNDS` rounds (default 3) that run both ways in turn.

mod common;

use std::time::Instant;

use graftlm::backend::DefaultCpu as B;
use graftlm::generate::logits_to_vec;
use graftlm::sampling::argmax;
use graftlm::{KvCache, Mode};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n_tok = env("GRAFTLM_DECODE_TOKENS", 32);
    let n_seq = env("GRAFTLM_BATCH", 8);
    let cfg = common::smollm2_135m();
    let mut model = common::random_model::<B>(&cfg, 42);
    let names: Vec<String> = (0..n_seq).map(|i| format!("a{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let a = common::random_adapter(&cfg, 16, name, 100 + i as u64);
        model.attach(&a, 1.0, Mode::Separate).unwrap();
    }
    let prompt: Vec<u32> = (1..=16).collect();
    let cap = prompt.len() + n_tok + 1;

    // One after another: each sequence's tokens with only its adapter active. Returns the
    // whole time and the prompts' share of it.
    let one_after_another = |model: &mut graftlm::Model<B>| {
        let (t, mut prefill_s) = (Instant::now(), 0.0);
        for name in &names {
            model.activate_only(name).unwrap();
            let mut c = model.new_cache(cap);
            let tp = Instant::now();
            let l = model.forward(&prompt, &mut c, true).unwrap();
            let mut tok = argmax(&logits_to_vec(l).unwrap()) as u32;
            prefill_s += tp.elapsed().as_secs_f64();
            for _ in 0..n_tok {
                let l = model.forward(&[tok], &mut c, true).unwrap();
                tok = argmax(&logits_to_vec(l).unwrap()) as u32;
            }
        }
        (t.elapsed().as_secs_f64(), prefill_s)
    };

    // Together: prompts one by one (each with its adapter), then one forward per step for all.
    let choice: Vec<Option<&str>> = names.iter().map(|n| Some(n.as_str())).collect();
    let together = |model: &graftlm::Model<B>| {
        let t = Instant::now();
        let mut caches: Vec<KvCache<B>> = (0..n_seq).map(|_| model.new_cache(cap)).collect();
        let mut next: Vec<u32> = Vec::new();
        for (c, a) in caches.iter_mut().zip(&choice) {
            let l = model.forward_with(&prompt, c, true, *a).unwrap();
            next.push(argmax(&logits_to_vec(l).unwrap()) as u32);
        }
        let prefill_s = t.elapsed().as_secs_f64();
        for _ in 0..n_tok {
            let l = model.forward_batch(&next, &mut caches, &choice).unwrap();
            let v = logits_to_vec(l).unwrap();
            let width = v.len() / n_seq;
            next = v.chunks(width).map(|r| argmax(r) as u32).collect();
        }
        (t.elapsed().as_secs_f64(), prefill_s)
    };

    // The VM's speed drifts within a minute: the two ways are measured in turn,
    // `GRAFTLM_BENCH_ROUNDS` times (default 3), and each figure is the median of its rounds.
    let rounds = env("GRAFTLM_BENCH_ROUNDS", 3).max(1);
    let only = std::env::var_os("GRAFTLM_BATCH_ONLY").is_some();
    let (mut seqs, mut seq_steps, mut batches, mut batch_steps) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        if !only {
            let (s, p) = one_after_another(&mut model);
            seqs.push(s);
            seq_steps.push(s - p);
        }
        let (s, p) = together(&model);
        batches.push(s);
        batch_steps.push(s - p);
    }
    let med = |v: &mut Vec<f64>| common::median(v).unwrap_or(0.0);
    let (seq_s, batch_s) = (med(&mut seqs), med(&mut batches));
    let (seq_decode, batch_decode) = (med(&mut seq_steps), med(&mut batch_steps));
    let total = (n_seq * n_tok) as f64;
    let v = serde_json::json!({
        "sequences": n_seq,
        "tokens_each": n_tok,
        "one_after_another_tok_s": total / seq_s,
        "batched_tok_s": total / batch_s,
        "speedup": seq_s / batch_s,
        "decode_one_after_another_tok_s": total / seq_decode,
        "decode_batched_tok_s": total / batch_decode,
        "decode_speedup": seq_decode / batch_decode,
    });
    println!(
        "{n_seq} sequences × {n_tok} tokens after 16-token prompts, a different LoRA r16 each: \
         decode steps {:.1} tok/s one after another, {:.1} batched ({:.2}×); with the prompts \
         {:.1} vs {:.1} tok/s ({:.2}×)",
        total / seq_decode,
        total / batch_decode,
        seq_decode / batch_decode,
        total / seq_s,
        total / batch_s,
        seq_s / batch_s
    );
    println!("{v}");
}
