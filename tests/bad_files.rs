//! More of the bad-input catalogue (issue 6): wrong dtypes, symlink loops, unreadable files, and
//! regression inputs for what the fuzz targets (`tests/fuzz/`) found. Each must give a typed error
//! that names the file — never a panic or a hang.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::fixtures;
use graftlm::{Checkpoint, Error, Tokenizer};

fn scratch(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    fs::create_dir_all(&dir).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    (tmp, dir)
}

fn read_all(dir: &Path) -> graftlm::Result<()> {
    let ck = Checkpoint::open(dir)?;
    let files = ck.weights()?;
    graftlm::checkpoint::names::load(&ck.config, &files).map(|_| ())
}

fn adapters() -> PathBuf {
    fixtures().join("../adapters")
}

/// Sets the stored dtype of tensor `name` in a safetensors header (same-width dtypes only, so the
/// data offsets stay valid and only the dtype is wrong).
fn set_dtype(path: &Path, name: &str, dtype: &str) {
    let bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header[name]["dtype"] = dtype.into();
    let mut h = serde_json::to_vec(&header).unwrap();
    assert!(h.len() <= n, "header grew");
    h.resize(n, b' ');
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    fs::write(path, out).unwrap();
}

#[test]
fn integer_or_bool_weights_are_refused_by_name() {
    for dtype in ["I32", "U32", "BOOL"] {
        let (_t, dir) = scratch(&fixtures().join("phi2/hf"));
        let name = "model.layers.0.self_attn.dense.weight";
        set_dtype(&dir.join("model.safetensors"), name, dtype);
        let err = read_all(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("model.safetensors"), "{dtype}: {msg}");
        // A same-width dtype passes safetensors' own size check and is refused by name.
        if dtype != "BOOL" {
            assert!(msg.contains(name), "{dtype}: {msg}");
        }
    }
}

#[test]
fn wrong_dtype_in_an_adapter_is_refused() {
    let (_t, dir) = scratch(&adapters().join("peft-llama-qv"));
    let path = dir.join("adapter_model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.ends_with("lora_A.weight"))
        .unwrap()
        .clone();
    set_dtype(&path, &name, "I32");
    let base = Checkpoint::open(fixtures().join("llama/hf")).unwrap();
    let err = graftlm::adapters::load(&dir, None, &base.config, None).unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
}

#[cfg(unix)]
#[test]
fn symlink_loops_are_errors_not_hangs() {
    use std::os::unix::fs::symlink;
    // A file that links to itself, in each role.
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let (_t, dir) = scratch(&fixtures().join("phi2/hf"));
        fs::remove_file(dir.join(file)).unwrap();
        symlink(dir.join(file), dir.join(file)).unwrap();
        let err = match file {
            "tokenizer.json" => Tokenizer::from_dir(&dir).map(|_| ()).unwrap_err(),
            _ => read_all(&dir).unwrap_err(),
        };
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
    // A run directory whose step folder links back to the run.
    let (_t, run) = scratch(&adapters().join("litgpt-lora-llama/step-000002"));
    let step = run.join("step-000004");
    fs::create_dir(&step).unwrap();
    symlink(&run, step.join("loop")).unwrap();
    symlink(
        step.join("lit_model.pth.lora"),
        step.join("lit_model.pth.lora"),
    )
    .unwrap();
    let base = Checkpoint::open(fixtures().join("llama/hf")).unwrap();
    let err = graftlm::adapters::load(&step, None, &base.config, None).unwrap_err();
    assert!(err.to_string().contains("step-000004"), "{err}");
}

#[test]
fn unreadable_files_are_named() {
    // A directory where a file should be cannot be read by anyone (root included). (Optional side
    // files such as tokenizer_config.json count as absent when they are not files, as in LitGPT.)
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let (_t, dir) = scratch(&fixtures().join("phi2/hf"));
        fs::remove_file(dir.join(file)).unwrap();
        fs::create_dir(dir.join(file)).unwrap();
        let err = match file {
            "tokenizer.json" => Tokenizer::from_dir(&dir).map(|_| ()).unwrap_err(),
            _ => read_all(&dir).unwrap_err(),
        };
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let (_t, dir) = scratch(&fixtures().join("phi2/hf"));
        let path = dir.join("model.safetensors");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        // Only meaningful where permissions apply (not as root).
        if fs::File::open(&path).is_err() {
            let err = read_all(&dir).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(err.to_string().contains("model.safetensors"), "{err}");
        }
    }
}

/// Found by `tests/fuzz` (target `tokenizer`): the tokenizers crate panics on a JSON syntax error
/// inside the `decoder` section instead of returning an error.
#[test]
fn tokenizer_json_syntax_error_in_decoder_is_an_error() {
    let (_t, dir) = scratch(&fixtures().join("llama/lit"));
    let path = dir.join("tokenizer.json");
    let text = fs::read_to_string(&path).unwrap();
    let bad = text.replacen(
        "\"type\": \"ByteLevel\",\n    \"add",
        "\"type\": \"Byte\u{1}Level\",\n    \"add",
        1,
    );
    assert_ne!(bad, text);
    fs::write(&path, bad).unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

/// Found by `tests/fuzz` (target `adapter_config_json`): an invalid `target_modules` regex gave an
/// error that did not name `adapter_config.json`.
#[test]
fn invalid_target_regex_names_the_config() {
    for field in ["target_modules", "exclude_modules"] {
        let (_t, dir) = scratch(&adapters().join("peft-llama-qv"));
        let path = dir.join("adapter_config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        cfg[field] = ".*q_proj)".into();
        fs::write(&path, cfg.to_string()).unwrap();
        let base = Checkpoint::open(fixtures().join("llama/hf")).unwrap();
        let err = graftlm::adapters::load(&dir, None, &base.config, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("adapter_config.json") && msg.contains(field),
            "{field}: {msg}"
        );
    }
}
