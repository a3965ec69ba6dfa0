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
        "rope_local_base_freq: null",
        "rope_local_base_freq: 10000.0",
    );
    assert_ne!(soft, cfg);
    fs::write(dir.join("model_config.yaml"), soft).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    match &err {
        Error::UnsupportedConfig { field, .. } => assert_eq!(field, "rope_local_base_freq"),
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
    let mut zero = GenerateOptions::default();
    zero.max_new_tokens = 0;
    let err = graftlm::generate(&model, &tok, &ids, &zero, &mut |_| true).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    let block = model.config().block_size;
    let mut long = GenerateOptions::default();
    long.max_new_tokens = block;
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

/// Overwrites element 0 of tensor `name` in a safetensors file with `value`.
fn poke_safetensors(path: &Path, name: &str, value: f32) {
    let mut bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    assert_eq!(header[name]["dtype"], "F32");
    bytes[8 + n + start..8 + n + start + 4].copy_from_slice(&value.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[test]
fn nan_or_inf_weights_are_refused_by_name() {
    for bad in [f32::NAN, f32::INFINITY] {
        let (_t, dir) = scratch("phi2", "hf");
        poke_safetensors(
            &dir.join("model.safetensors"),
            "model.layers.1.mlp.fc2.weight",
            bad,
        );
        let err = load(&dir).unwrap_err();
        assert!(matches!(err, Error::BadTensor { .. }), "{err}");
        assert!(
            err.to_string().contains("model.layers.1.mlp.fc2.weight"),
            "{err}"
        );
        assert!(err.to_string().contains("non-finite"), "{err}");
    }
}

#[test]
fn nan_in_an_adapter_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("peft");
    copy_dir(&fixtures().join("../adapters/peft-llama-qv"), &dir);
    poke_safetensors(
        &dir.join("adapter_model.safetensors"),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
        f32::NAN,
    );
    let err = graftlm::ModelBuilder::new()
        .base(fixtures().join("llama/hf"))
        .adapter(dir.into())
        .plan()
        .unwrap_err();
    assert!(
        err.to_string().contains("lora_B") && err.to_string().contains("non-finite"),
        "{err}"
    );
}

#[test]
fn adapter_rank_mismatch_and_missing_factor() {
    // Rewrite the PEFT adapter with one lora_A of the wrong rank, then with one factor missing.
    let src = fixtures().join("../adapters/peft-llama-qv");
    let bytes = fs::read(src.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    for case in ["rank", "missing"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("peft");
        copy_dir(&src, &dir);
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, view) in st.tensors() {
            let mut shape = view.shape().to_vec();
            let mut data = view.data().to_vec();
            if name == key {
                if case == "missing" {
                    continue;
                }
                shape[0] += 1; // rank 5 where B has rank 4
                data.extend(std::iter::repeat_n(0u8, shape[1] * 4));
            }
            owned.push((name, shape, data));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                        .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors"))
            .unwrap();
        let err = graftlm::ModelBuilder::new()
            .base(fixtures().join("llama/hf"))
            .adapter(dir.into())
            .plan()
            .unwrap_err();
        match case {
            "rank" => assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}"),
            _ => assert!(matches!(err, Error::MissingTensor { .. }), "{err}"),
        }
        assert!(err.to_string().contains("q_proj.lora_A"), "{case}: {err}");
    }
}

#[test]
fn step_folder_without_weights() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("run/step-000100")).unwrap();
    fs::write(
        tmp.path().join("run/step-000100/hyperparameters.yaml"),
        "lora_r: 4\n",
    )
    .unwrap();
    let err = graftlm::adapters::locate(&tmp.path().join("run"), None).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("step folders"), "{err}");
}

/// A LitGPT `lora_alpha: .inf` is refused by file and field; a PEFT `lora_alpha` of 1e38 (finite,
/// but a merge of it could never be undone) likewise, at attach; neither generates garbage.
#[test]
fn non_finite_or_absurd_alphas_are_refused_by_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let step = tmp.path().join("run/step-000002");
    copy_dir(
        &fixtures().join("../adapters/litgpt-lora-llama/step-000002"),
        &step,
    );
    let hp = step.join("hyperparameters.yaml");
    let text = fs::read_to_string(&hp)
        .unwrap()
        .replace("lora_alpha: 8", "lora_alpha: .inf");
    fs::write(&hp, text).unwrap();
    let err = graftlm::ModelBuilder::new()
        .base(fixtures().join("llama/lit"))
        .adapter(step.into())
        .plan()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::UnsupportedConfig { .. })
            && msg.contains("lora_alpha")
            && msg.contains("hyperparameters.yaml"),
        "{msg}"
    );

    let dir = tmp.path().join("peft");
    copy_dir(&fixtures().join("../adapters/peft-llama-qv"), &dir);
    let cfg = dir.join("adapter_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg).unwrap()).unwrap();
    v["lora_alpha"] = serde_json::json!(1e38);
    fs::write(&cfg, v.to_string()).unwrap();
    let plan = graftlm::ModelBuilder::new()
        .base(fixtures().join("llama/hf"))
        .adapter(dir.clone().into())
        .plan()
        .unwrap();
    let err = plan.build::<B>(&Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lora_alpha") && msg.contains("adapter_config.json"),
        "{msg}"
    );
    // Past f32's range, `alpha / r` is infinite: B's zeros would turn to NaN. Refused at read.
    v["lora_alpha"] = serde_json::json!(1e40);
    fs::write(&cfg, v.to_string()).unwrap();
    let err = graftlm::ModelBuilder::new()
        .base(fixtures().join("llama/hf"))
        .adapter(dir.into())
        .plan()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lora_alpha") && msg.contains("not a finite"),
        "{msg}"
    );
}

/// Scales: non-finite ones, and ones whose merge could not be undone (the base would be lost to
/// rounding), are refused through the API and leave the model as it was; a sane scale merged,
/// unmerged and detached gives the base back.
#[test]
fn scales_whose_merge_cannot_be_undone_are_refused() {
    let dir = fixtures().join("../adapters/peft-llama-qv");
    let ck = Checkpoint::open(fixtures().join("llama/hf")).unwrap();
    let mut model = ck.load::<B>(&Default::default()).unwrap();
    let adapter = graftlm::adapters::read(
        &graftlm::adapters::locate(&dir, None).unwrap(),
        &ck.config,
        None,
    )
    .unwrap();
    let ids = [1u32, 5, 9, 13];
    let logits = |m: &graftlm::Model<B>| {
        let mut c = m.new_cache(ids.len());
        graftlm::generate::logits_to_vec(m.forward(&ids, &mut c, true).unwrap()).unwrap()
    };
    let base = logits(&model);
    for bad in [f32::NAN, f32::INFINITY, 1e10, -1e30] {
        let e = model
            .attach(&adapter, bad, graftlm::Mode::Merged)
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { ref name, .. } if name == "scale"),
            "{bad}: {e}"
        );
        assert!(model.grafts().is_empty());
    }
    assert_eq!(logits(&model), base, "refused attaches changed nothing");
    model
        .attach(&adapter, 2.0, graftlm::Mode::Separate)
        .unwrap();
    let name = adapter.name.clone();
    assert!(model.set_scale(&name, 1e10).is_err());
    assert_eq!(
        model.grafts()[0].scale,
        2.0,
        "a refused scale leaves the old one"
    );
    model.set_merged(&name, true).unwrap();
    // Merged, the weight holds the term; the limit for a new scale still comes from the base
    // (a merge cannot raise it step by step).
    let mut allowed = 2.0f32;
    while model.set_scale(&name, allowed * 4.0).is_ok() {
        allowed *= 4.0;
        assert!(
            allowed < 1e7,
            "the limit keeps rising with the merged weight"
        );
    }
    model.set_scale(&name, 2.0).unwrap();
    model.set_merged(&name, false).unwrap();
    model.detach(&name).unwrap();
    let back = logits(&model);
    let diff = back
        .iter()
        .zip(&base)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-5, "base restored to rounding ({diff})");
}

/// Tensors and configurations a program hands over itself (`Model::from_tensors`, the
/// `advanced` parts) get the checks a checkpoint's get: a wrong shape, too few values or an
/// unusable configuration is an error naming it, not a panic.
#[test]
fn caller_built_models_are_checked_like_checkpoints() {
    use graftlm::advanced::{Linear, Norm};
    use graftlm::checkpoint::{names, HostTensor, WeightFiles};
    use graftlm::config::ModelConfig;
    use graftlm::model::WeightDtype;

    let dir = fixtures().join("llama/lit");
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    let tensors = names::load(&cfg, &WeightFiles::open_dir(&dir).unwrap()).unwrap();
    let dev = Default::default();
    let build = |cfg: &ModelConfig, t: &std::collections::HashMap<String, HostTensor>| {
        graftlm::Model::<B>::from_tensors(cfg.clone(), t.clone(), &dev)
    };
    assert!(build(&cfg, &tensors).is_ok());

    let qkv = "transformer.h.0.attn.qkv.weight";
    let mut t = tensors.clone();
    let w = t.get_mut(qkv).unwrap();
    w.shape.reverse();
    match build(&cfg, &t) {
        Err(Error::ShapeMismatch { name, .. }) => assert_eq!(name, qkv),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut t = tensors.clone();
    t.get_mut(qkv).unwrap().data.pop();
    match build(&cfg, &t) {
        Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, qkv),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut bad = cfg.clone();
    bad.n_query_groups = bad.n_head + 1;
    assert!(matches!(
        build(&bad, &tensors),
        Err(Error::UnsupportedConfig { .. })
    ));

    let w = &tensors[qkv];
    let short = HostTensor {
        shape: w.shape.clone(),
        data: w.data[1..].to_vec(),
    };
    let flat = HostTensor {
        shape: vec![w.data.len()],
        data: w.data.clone(),
    };
    let bias = HostTensor {
        shape: vec![3],
        data: vec![0.0; 3],
    };
    for (weight, b) in [(&short, None), (&flat, None), (w, Some(&bias))] {
        assert!(matches!(
            Linear::<B>::from_host(weight, b, WeightDtype::F32, &dev),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(Linear::<B>::from_host(w, None, WeightDtype::F32, &dev).is_ok());
    let norm = &tensors["transformer.h.0.norm_1.weight"];
    assert!(matches!(
        Norm::<B>::from_host(cfg.norm, norm, Some(&bias), 1e-5, &dev),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Norm::<B>::from_host(cfg.norm, w, None, 1e-5, &dev),
        Err(Error::InvalidArgument { .. })
    ));
}
