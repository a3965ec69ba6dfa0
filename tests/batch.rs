//! Several sequences with different adapters in one forward pass (`Model::forward_batch`): each
//! row must equal the same sequence run alone with its adapter.

mod common;

use common::{fixtures, reference, rel_err, Cpu};
use graftlm::adapters;
use graftlm::generate::logits_to_vec;
use graftlm::sampling::argmax;
use graftlm::{Checkpoint, KvCache, Mode, Model};

fn lora_dir() -> std::path::PathBuf {
    common::repo().join("tests/fixtures/adapters/families/qwen2-peft")
}

/// The qwen2 base with the same PEFT LoRA attached twice: `a` at scale 1, `b` at scale 0.5.
fn model() -> Model<Cpu> {
    let ck = Checkpoint::open(fixtures().join("qwen2/hf")).unwrap();
    let mut m = ck.load::<Cpu>(&Default::default()).unwrap();
    for (name, scale) in [("a", 1.0), ("b", 0.5)] {
        let ad = adapters::load(&lora_dir(), None, &ck.config, Some(name)).unwrap();
        m.attach(&ad, scale, Mode::Separate).unwrap();
    }
    m
}

fn rows(t: burn::prelude::Tensor<Cpu, 2>) -> Vec<Vec<f32>> {
    let [n, v] = t.dims();
    let all = logits_to_vec(t).unwrap();
    (0..n).map(|i| all[i * v..(i + 1) * v].to_vec()).collect()
}

#[test]
fn each_row_equals_its_sequence_run_alone_with_its_adapter() {
    let mut m = model();
    let ids = reference("qwen2").prompt_ids;
    let prompts = [&ids[..], &ids[..ids.len() - 3], &ids[2..]];
    let choice = [Some("a"), None, Some("b")];
    let cap = ids.len() + 8;

    // Prompts one by one, each with its adapter; the batch continues them.
    let mut caches: Vec<KvCache<Cpu>> = (0..3).map(|_| m.new_cache(cap)).collect();
    let mut next = Vec::new();
    for i in 0..3 {
        let l = m
            .forward_with(prompts[i], &mut caches[i], true, choice[i])
            .unwrap();
        next.push(argmax(&logits_to_vec(l).unwrap()) as u32);
    }
    // The same sequences alone, through the ordinary path with only their adapter active.
    let mut alone: Vec<KvCache<Cpu>> = (0..3).map(|_| m.new_cache(cap)).collect();
    let alone_logits = |m: &mut Model<Cpu>, i: usize, ids: &[u32], c: &mut KvCache<Cpu>| {
        match choice[i] {
            Some(name) => m.activate_only(name).unwrap(),
            None => {
                m.set_active("a", false).unwrap();
                m.set_active("b", false).unwrap();
            }
        }
        logits_to_vec(m.forward(ids, c, true).unwrap()).unwrap()
    };
    for i in 0..3 {
        alone_logits(&mut m, i, prompts[i], &mut alone[i]);
    }

    let mut outputs = Vec::new();
    for step in 0..4 {
        let batch = rows(m.forward_batch(&next, &mut caches, &choice).unwrap());
        for i in 0..3 {
            let want = alone_logits(&mut m, i, &[next[i]], &mut alone[i]);
            let e = rel_err(&batch[i], &want);
            assert!(e < 1e-5, "step {step} row {i}: relative error {e:e}");
            assert_eq!(caches[i].len(), alone[i].len());
        }
        outputs.push(batch.clone());
        next = batch.iter().map(|r| argmax(r) as u32).collect();
    }
    assert_eq!(outputs.len(), 4);
}

#[test]
fn a_row_uses_only_its_own_adapter() {
    let m = model();
    let ids = reference("qwen2").prompt_ids;
    let run = |choice: Option<&str>| {
        let mut c = vec![m.new_cache(ids.len() + 1); 2];
        m.forward_with(&ids, &mut c[0], true, choice).unwrap();
        m.forward_with(&ids, &mut c[1], true, None).unwrap();
        rows(m.forward_batch(&[7, 7], &mut c, &[choice, None]).unwrap())
    };
    let (a, b, none) = (run(Some("a")), run(Some("b")), run(None));
    // Row 1 is always the base; row 0 follows its adapter.
    assert!(rel_err(&a[1], &none[1]) < 1e-6 && rel_err(&b[1], &none[1]) < 1e-6);
    assert!(rel_err(&none[0], &none[1]) < 1e-6);
    assert!(rel_err(&a[0], &none[0]) > 1e-3, "adapter a changes its row");
    assert!(rel_err(&a[0], &b[0]) > 1e-4, "scales 1 and 0.5 differ");
}

#[test]
fn batch_arguments_are_checked() {
    let mut m = model();
    let mut caches = vec![m.new_cache(4); 2];
    let err = |r: graftlm::Result<_>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let e = err(m.forward_batch(&[1, 2], &mut caches, &[None]));
    assert!(e.contains("one of each per sequence"), "{e}");
    let e = err(m.forward_batch(&[1, 2], &mut caches, &[Some("zzz"), None]));
    assert!(e.contains("`zzz`") && e.contains("a, b"), "{e}");
    m.set_merged("a", true).unwrap();
    let e = err(m.forward_batch(&[1, 2], &mut caches, &[Some("a"), None]));
    assert!(e.contains("merged"), "{e}");
    // Nothing ran: the caches did not move.
    assert!(caches.iter().all(|c| c.is_empty()));
    // A full cache is refused by name of the limit.
    let mut full = vec![m.new_cache(1); 2];
    m.forward_batch(&[1, 2], &mut full, &[None, Some("b")])
        .unwrap();
    let e = err(m.forward_batch(&[1, 2], &mut full, &[None, None]));
    assert!(e.contains("context") || e.contains("block"), "{e}");
}

#[test]
fn an_active_llama_adapter_is_refused_in_a_batch() {
    let dir = common::repo().join("tests/fixtures/adapters/families/qwen2-adapter-v2");
    let mut m = graftlm::ModelBuilder::new()
        .adapter(dir.into())
        .build::<Cpu>(&Default::default())
        .unwrap();
    let name = m.grafts()[0].name.clone();
    let mut caches = vec![m.new_cache(4); 2];
    let e = m
        .forward_batch(&[1, 2], &mut caches, &[None, None])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("LLaMA-Adapter") && e.contains(&name), "{e}");
    m.set_active(&name, false).unwrap();
    m.forward_batch(&[1, 2], &mut caches, &[None, None])
        .unwrap();
}

#[test]
fn generate_batch_equals_each_request_generated_alone() {
    // graftlm's own kernels (AVX-512, or AVX2 + FMA + F16C) give every row the same bits at
    // any batch size; burn's fallback ops need not.
    #[cfg(target_arch = "x86_64")]
    let exact = std::arch::is_x86_feature_detected!("avx512f")
        || (std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c"));
    #[cfg(not(target_arch = "x86_64"))]
    let exact = false;
    let mut m = model();
    let tok = graftlm::Tokenizer::from_dir(&fixtures().join("qwen2/hf")).unwrap();
    let ids = reference("qwen2").prompt_ids;
    // Twelve requests: more rows than the few-rows kernel takes (8), each adapter's rows
    // scattered through the batch.
    let four = [&ids[..], &ids[1..], &ids[..4], &ids[3..]];
    let prompts: Vec<&[u32]> = (0..12).map(|i| four[i % 4]).collect();
    let choice: Vec<Option<&str>> = (0..12)
        .map(|i| [Some("b"), None, Some("a"), Some("a"), Some("a"), None][i % 6])
        .collect();
    for (sampling, stop_strings, max_new_tokens) in [
        (graftlm::SamplingParams::greedy(), vec![], 9),
        (
            graftlm::SamplingParams::new(0.9, Some(20), 1.0, 1234),
            vec![],
            7,
        ),
        // Different lengths: the stop string ends some requests early, the others go on.
        (
            graftlm::SamplingParams::new(1.0, Some(50), 1.0, 7),
            vec!["o".to_string()],
            12,
        ),
    ] {
        let mut opts = graftlm::GenerateOptions::new(max_new_tokens, sampling);
        opts.stop_strings = stop_strings;
        opts.stop_tokens = Some(vec![]);
        let requests: Vec<graftlm::BatchRequest<'_>> = prompts
            .iter()
            .zip(choice.iter().copied())
            .map(|(p, a)| graftlm::BatchRequest::new(p, a))
            .collect();
        let mut streamed = vec![String::new(); prompts.len()];
        let batch = graftlm::generate_batch(&m, &tok, &requests, &opts, &mut |i, t| {
            streamed[i].push_str(t);
            true
        })
        .unwrap();
        if !opts.stop_strings.is_empty() {
            // Requests leave the batch at different steps (3, 5, 12 tokens with this seed).
            let lens: Vec<usize> = batch.iter().map(|g| g.generated_ids.len()).collect();
            assert!(lens.iter().any(|&l| l != lens[0]), "{lens:?}");
        }
        for (i, got) in batch.iter().enumerate() {
            match choice[i] {
                Some(name) => m.activate_only(name).unwrap(),
                None => {
                    m.set_active("a", false).unwrap();
                    m.set_active("b", false).unwrap();
                }
            }
            let alone = graftlm::generate(&m, &tok, prompts[i], &opts, &mut |_| true).unwrap();
            // Bit-identical rows need the host kernels (AVX-512); elsewhere burn's matmul serves
            // the batch and rounding could flip a near-tie.
            if exact {
                assert_eq!(got, &alone, "request {i} ({:?})", choice[i]);
            }
            assert_eq!(streamed[i], got.text, "request {i}: streamed text");
        }
    }
    // Checked before anything runs.
    let bad = [graftlm::BatchRequest::new(&ids, Some("nope"))];
    let opts = graftlm::GenerateOptions::default();
    let e = graftlm::generate_batch(&m, &tok, &bad, &opts, &mut |_, _| true).unwrap_err();
    assert!(e.to_string().contains("`nope`"), "{e}");
    // A bad token in a later request is refused before the first one streams anything.
    let far = [ids[0], 1 << 30];
    let reqs = [
        graftlm::BatchRequest::new(&ids, None),
        graftlm::BatchRequest::new(&far, None),
    ];
    let mut streamed = false;
    let e = graftlm::generate_batch(&m, &tok, &reqs, &opts, &mut |_, _| {
        streamed = true;
        true
    })
    .unwrap_err();
    assert!(e.to_string().contains("vocabulary") && !streamed, "{e}");
}
