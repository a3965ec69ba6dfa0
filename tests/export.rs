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
