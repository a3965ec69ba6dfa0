//! Checking an adapter fixture (`reference.json` beside it) in separate and merged mode.

use std::path::{Path, PathBuf};

use super::{again, assert_close_on, greedy, rel_err};
use graftlm::backend::ModelBackend;
use graftlm::{Model, ModelBuilder, Tokenizer};
use serde::Deserialize;

/// The base fixtures that `tests/fixtures/make_family_adapters.py` puts adapters on.
pub const FAMILIES: [&str; 13] = [
    "gptneox",
    "qwen2",
    "phi2",
    "mistral",
    "gemma",
    "gemma2",
    "phi3",
    "stablelm",
    "llama32",
    "qwen3",
    "olmo2",
    "falcon7b",
    "falcon40b",
];

#[derive(Debug, Deserialize)]
pub struct Ref {
    pub base: String,
    pub prompt_ids: Vec<u32>,
    pub logits_last: Vec<f32>,
    pub logits_last_merged: Vec<f32>,
    pub greedy_new_ids: Vec<u32>,
    pub max_new_tokens: usize,
}

pub fn fixtures() -> PathBuf {
    super::repo().join("tests/fixtures")
}

pub fn reference(dir: &Path) -> Ref {
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn last_logits<B: ModelBackend>(model: &Model<B>, ids: &[u32]) -> Vec<f32> {
    super::logits(model, ids, false)
}

/// Builds base + adapter (base found from the adapter's own record) and checks both modes on the
/// default CPU backend.
pub fn check(adapter_dir: &Path) {
    check_on::<graftlm::backend::DefaultCpu>(adapter_dir)
}

/// [`check`] on backend `B`.
pub fn check_on<B: ModelBackend>(adapter_dir: &Path) {
    let r = reference(adapter_dir);
    let plan = ModelBuilder::new()
        .adapter(adapter_dir.to_path_buf().into())
        .plan()
        .unwrap_or_else(|e| panic!("{}: {e}", adapter_dir.display()));
    let base = fixtures().join(&r.base).canonicalize().unwrap();
    assert_eq!(
        plan.checkpoint.dir.canonicalize().unwrap(),
        base,
        "base found from the adapter record"
    );
    let tok = Tokenizer::from_dir(&plan.checkpoint.dir).unwrap();
    let what = adapter_dir.display().to_string();

    let mut model = plan.build::<B>(&Default::default()).unwrap();
    let base_logits = {
        let plain = plan.checkpoint.load::<B>(&Default::default()).unwrap();
        last_logits(&plain, &r.prompt_ids)
    };
    assert_close_on::<B>(
        &format!("{what} separate"),
        &last_logits(&model, &r.prompt_ids),
        &r.logits_last,
    );
    assert_eq!(
        greedy(&model, &tok, &r.prompt_ids, r.max_new_tokens),
        r.greedy_new_ids,
        "{what}: greedy (separate)"
    );

    let name = model.grafts()[0].name.clone();
    model.set_merged(&name, true).unwrap();
    let merged = last_logits(&model, &r.prompt_ids);
    assert_close_on::<B>(&format!("{what} merged"), &merged, &r.logits_last_merged);
    assert_eq!(
        greedy(&model, &tok, &r.prompt_ids, r.max_new_tokens),
        r.greedy_new_ids,
        "{what}: greedy (merged)"
    );

    model.set_merged(&name, false).unwrap();
    model.set_active(&name, false).unwrap();
    let restored = last_logits(&model, &r.prompt_ids);
    assert!(
        rel_err(&restored, &base_logits) < again::<B>(1e-5),
        "{what}: unmerge restores the base"
    );
    model.detach(&name).unwrap();
    assert!(model.grafts().is_empty());
}
