//! Bad input gives typed errors that name the offending file or tensor — never a panic.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fixtures;
use graftlm::{Checkpoint, Error, GenerateOptions, Tokenizer};

type B = graftlm::backend::DefaultCpu;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A writable copy of a fixture checkpoint.
fn scratch(name: &str, layout: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(layout);
    copy_dir(&fixtures().join(name).join(layout), &dir);
    (tmp, dir)
}

fn load(dir: &Path) -> graftlm::Result<graftlm::Model<B>> {
    Checkpoint::open(dir)?.load::<B>(&Default::default())
}

fn truncate(path: &Path, keep: f64) {
    let bytes = fs::read(path).unwrap();
    let n = (bytes.len() as f64 * keep) as usize;
    fs::write(path, &bytes[..n]).unwrap();
}

#[test]
fn missing_directory() {
    let err = Checkpoint::open("/nonexistent/graftlm/model").unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/graftlm/model"));
}

#[test]
fn directory_without_config() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Checkpoint::open(tmp.path()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("model_config.yaml"), "{err}");
}

#[test]
fn missing_weights() {
    let (_t, dir) = scratch("gptneox", "lit");
    fs::remove_file(dir.join("lit_model.pth")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("lit_model.pth"), "{err}");
}

#[test]
fn truncated_safetensors_at_several_points() {
    for keep in [0.0, 0.001, 0.3, 0.999] {
        let (_t, dir) = scratch("phi2", "hf");
        let f = dir.join("model.safetensors");
        truncate(&f, keep);
        let err = load(&dir).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "keep {keep}: {err}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
}

#[test]
fn truncated_or_corrupt_pth() {
    for keep in [0.0, 0.01, 0.5, 0.99] {
        let (_t, dir) = scratch("llama", "lit");
        truncate(&dir.join("lit_model.pth"), keep);
        let err = load(&dir).unwrap_err();
        assert!(
            matches!(err, Error::Parse { .. } | Error::BadTensor { .. }),
            "keep {keep}: {err}"
        );
        assert!(err.to_string().contains("lit_model.pth"), "{err}");
    }
    let (_t, dir) = scratch("llama", "lit");
    fs::write(dir.join("lit_model.pth"), b"this is not a zip file at all").unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err}");
}

#[test]
fn missing_shard() {
    let (_t, dir) = scratch("llama", "hf");
    let shard = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".safetensors"))
        .unwrap();
    fs::remove_file(&shard).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn wrong_shapes_name_tensor_and_both_shapes() {
    let (_t, dir) = scratch("gptneox", "hf");
    let cfg = fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let inter = v["intermediate_size"].as_u64().unwrap();
    v["intermediate_size"] = serde_json::json!(inter * 2);
    fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let err = load(&dir).unwrap_err();
    match &err {
        Error::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert!(name.contains("dense_h_to_4h"), "{err}");
            assert_ne!(expected, found);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn extra_tensors_mean_another_base() {
    // A config with fewer layers than the weights hold.
    let (_t, dir) = scratch("llama", "lit");
    let cfg = fs::read_to_string(dir.join("model_config.yaml")).unwrap();
    let cfg = cfg.replace("n_layer: 2", "n_layer: 1");
    fs::write(dir.join("model_config.yaml"), cfg).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, Error::UnexpectedTensors { .. }), "{err}");
    assert!(err.to_string().contains("transformer.h.1."), "{err}");
}

#[test]
fn unknown_architecture() {
    let (_t, dir) = scratch("phi2", "hf");
    fs::write(
        dir.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 8}"#,
    )
    .unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    assert!(matches!(err, Error::UnknownArchitecture { .. }), "{err}");
    assert!(err.to_string().contains("bert"));
}

#[test]
fn unsupported_config_field_is_named() {
    let (_t, dir) = scratch("llama", "lit");
    let cfg = fs::read_to_string(dir.join("model_config.yaml")).unwrap();
    let soft = cfg.replace(
        "attention_logit_softcapping: null",
        "attention_logit_softcapping: 50.0",
    );
    assert_ne!(soft, cfg);
    fs::write(dir.join("model_config.yaml"), soft).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    match &err {
        Error::UnsupportedConfig { field, .. } => assert_eq!(field, "attention_logit_softcapping"),
        other => panic!("expected UnsupportedConfig, got {other}"),
    }
    fs::write(
        dir.join("model_config.yaml"),
        format!("{cfg}no_such_field: 1\n"),
    )
    .unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    assert!(err.to_string().contains("no_such_field"), "{err}");
}

#[test]
fn empty_prompt_zero_tokens_and_overflow() {
    let dir = fixtures().join("gptneox").join("lit");
    let model = load(&dir).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let ids = tok.encode("").unwrap();
    let opts = GenerateOptions::default();
    let err = graftlm::generate(&model, &tok, &ids, &opts, &mut |_| true).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt), "{err}");

    let ids = tok.encode("hello").unwrap();
    let zero = GenerateOptions {
        max_new_tokens: 0,
        ..Default::default()
    };
    let err = graftlm::generate(&model, &tok, &ids, &zero, &mut |_| true).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    let block = model.config().block_size;
    let long = GenerateOptions {
        max_new_tokens: block,
        ..Default::default()
    };
    let err = graftlm::generate(&model, &tok, &ids, &long, &mut |_| true).unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
}

#[test]
fn missing_tokenizer() {
    let (_t, dir) = scratch("gptneox", "lit");
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));
}
