//! The bundled demo model reproduces LitGPT's greedy output (`examples/demo/reference.json`,
//! written by `examples/demo/train_demo.py` with `litgpt.generate.base.generate`).

use std::path::Path;

use graftlm::{Checkpoint, GenerateOptions, PromptStyle, SamplingParams, StopReason, Tokenizer};

#[test]
fn demo_matches_litgpt_greedy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("reference.json")).unwrap())
            .unwrap();
    let ids = |k: &str| -> Vec<u32> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let ckpt = Checkpoint::open(root.join("model")).unwrap();
    let model = ckpt
        .load::<graftlm::backend::DefaultCpu>(&Default::default())
        .unwrap();
    let tok = Tokenizer::from_dir(&ckpt.dir).unwrap();
    let style = PromptStyle::resolve(&ckpt.dir, &ckpt.config.name).unwrap();
    assert_eq!(style.name(), "Default");
    let prompt = style.apply(r["prompt"].as_str().unwrap(), None);
    let prompt_ids = tok.encode(&prompt).unwrap();
    assert_eq!(prompt_ids, ids("prompt_ids"));
    let want = ids("greedy_new_ids");
    let opts = GenerateOptions::new(want.len(), SamplingParams::greedy());
    let mut streamed = String::new();
    let out = graftlm::generate(&model, &tok, &prompt_ids, &opts, &mut |p| {
        streamed.push_str(p);
        true
    })
    .unwrap();
    assert_eq!(out.generated_ids, want);
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    // The streamed pieces are the text, and the text continues the prompt as LitGPT prints it.
    assert_eq!(streamed, out.text);
    let full = tok
        .decode(&[prompt_ids.clone(), want.clone()].concat())
        .unwrap();
    assert_eq!(
        format!("{}{}", tok.decode(&prompt_ids).unwrap(), out.text),
        full
    );
    assert_eq!(out.text, r["greedy_text"].as_str().unwrap());
}

#[test]
fn stop_string_cuts_text_and_sampling_is_seeded() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/model");
    let ckpt = Checkpoint::open(&root).unwrap();
    let model = ckpt
        .load::<graftlm::backend::DefaultCpu>(&Default::default())
        .unwrap();
    let tok = Tokenizer::from_dir(&ckpt.dir).unwrap();
    let ids = tok.encode("The Python interpreter").unwrap();
    let mut opts = GenerateOptions::new(40, SamplingParams::greedy());
    opts.stop_strings = vec!["\"import\"".into()];
    let mut streamed = String::new();
    let out = graftlm::generate(&model, &tok, &ids, &opts, &mut |p| {
        streamed.push_str(p);
        true
    })
    .unwrap();
    assert_eq!(out.stop_reason, StopReason::StopString);
    assert_eq!(out.text, ", and in the ");
    assert_eq!(streamed, out.text);

    let sampled = |seed| {
        let opts = GenerateOptions::new(20, SamplingParams::new(1.0, Some(50), 0.9, seed));
        graftlm::generate(&model, &tok, &ids, &opts, &mut |_| true)
            .unwrap()
            .generated_ids
    };
    assert_eq!(sampled(1), sampled(1));
    assert_ne!(sampled(1), sampled(2));
}
