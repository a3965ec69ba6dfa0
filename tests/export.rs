//! `graftlm merge` / `export::export_merged`: the written Hugging Face checkpoint loads back and
//! gives the merged logits of the reference library.

mod common;

use std::path::{Path, PathBuf};

use common::rel_err;
use graftlm::generate::logits_to_vec;
use graftlm::{Checkpoint, Model, ModelBuilder};

type B = graftlm::backend::DefaultCpu;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn last_logits(model: &Model<B>, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(ids.len());
    logits_to_vec(model.forward(ids, &mut cache, true).unwrap()).unwrap()
}

fn roundtrip(adapter: &str, expect_type: &str) {
    let dir = fixtures().join("adapters").join(adapter);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<f32> = r["logits_last_merged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let out = tempfile::tempdir().unwrap();
    let plan = ModelBuilder::new()
        .adapter(dir.clone().into())
        .plan()
        .unwrap();
    let report = graftlm::export::export_merged(&plan, out.path(), &mut |_| {}).unwrap();
    assert!(report.fingerprint.starts_with("fnv1a64:"));
    assert!(!out.path().join(".model.safetensors.partial").exists());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model_type"], expect_type, "{adapter}");
    let prov: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("graftlm_merge.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(prov["adapters"].as_array().unwrap().len(), 1);
    assert_eq!(prov["base_fingerprint"], report.fingerprint.as_str());

    let merged = Checkpoint::open(out.path())
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    let got = last_logits(&merged, &ids);
    let e = rel_err(&got, &want);
    assert!(
        e < 1e-4,
        "{adapter}: exported model vs reference merged logits: {e:e}"
    );
}

#[test]
fn export_litgpt_lora_on_litgpt_llama_base() {
    roundtrip("litgpt-lora-llama/final", "llama");
}

#[test]
fn export_litgpt_lora_on_gptneox_base_reinterleaves_qkv() {
    roundtrip("litgpt-lora-gptneox/final", "gpt_neox");
}

#[test]
fn export_peft_on_hf_bases() {
    roundtrip("peft-llama-rslora", "llama");
    roundtrip("peft-qwen2-trainer/checkpoint-4", "qwen2");
    roundtrip("peft-phi2-layers", "phi");
}

/// Every family's LoRA fixture (tests/fixtures/adapters/families) either exports to a checkpoint
/// that reproduces the merged reference, or is refused before anything is written.
#[test]
fn export_every_family() {
    // (fixture, model_type written, or None: refused)
    let cases: &[(&str, Option<&str>)] = &[
        ("gptneox-lit", Some("gpt_neox")),
        ("gptneox-peft", Some("gpt_neox")),
        ("qwen2-lit", Some("qwen2")),
        ("qwen2-peft", Some("qwen2")),
        ("phi2-lit", Some("phi")),
        ("phi2-peft", Some("phi")),
        ("mistral-lit", Some("mistral")),
        ("mistral-peft", Some("mistral")),
        ("llama32-lit", Some("llama")),
        ("llama32-peft", Some("llama")),
        ("qwen3-lit", Some("qwen3")),
        ("qwen3-peft", Some("qwen3")),
        ("olmo2-lit", Some("olmo2")),
        ("olmo2-peft", Some("olmo2")),
        ("falcon7b-lit", Some("falcon")),
        ("falcon7b-peft", Some("falcon")),
        ("falcon40b-lit", Some("falcon")),
        ("falcon40b-peft", Some("falcon")),
        ("gemma-peft", Some("gemma")),
        ("gemma2-peft", Some("gemma2")),
        ("stablelm-peft", Some("stablelm")),
        ("gemma-lit", None),
        ("gemma2-lit", None),
        ("stablelm-lit", None),
        ("phi3-lit", Some("llama")), // Phi-3 is Llama with fused tensors; written unfused
        ("phi3-peft", None),
    ];
    for (name, expect) in cases {
        let fixture = format!("families/{name}");
        match expect {
            Some(t) => roundtrip(&fixture, t),
            None => {
                let plan = ModelBuilder::new()
                    .adapter(fixtures().join("adapters").join(&fixture).into())
                    .plan()
                    .unwrap();
                let out = tempfile::tempdir().unwrap();
                let Err(err) = graftlm::export::export_merged(&plan, out.path(), &mut |_| {})
                else {
                    panic!("{name}: exported, expected a refusal");
                };
                assert!(
                    matches!(err, graftlm::Error::Unsupported(_)),
                    "{name}: {err}"
                );
                assert!(!out.path().join("model.safetensors").exists(), "{name}");
            }
        }
    }
}

#[test]
fn fingerprint_tells_bases_apart() {
    let a = Checkpoint::open(fixtures().join("models/llama/lit")).unwrap();
    let b = Checkpoint::open(fixtures().join("models/llama/hf")).unwrap();
    let c = Checkpoint::open(fixtures().join("models/mistral/hf")).unwrap();
    let fa = graftlm::export::fingerprint(&a.config, &a.weights().unwrap()).unwrap();
    let fc = graftlm::export::fingerprint(&c.config, &c.weights().unwrap()).unwrap();
    assert_ne!(fa, fc);
    // Same weights in two layouts: the values agree, so only the config family may differ.
    let fb = graftlm::export::fingerprint(&b.config, &b.weights().unwrap()).unwrap();
    assert_eq!(fa, fb);
}
