//! `graftlm merge` (and the export API behind it) never harms an input or an unrelated file, and
//! its output appears whole or not at all (issue 24, class 1; the C and Python entry points are
//! checked in `ffi/`).
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graftlm"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A copy of a fixture folder's plain files.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every file under `dir` (not following links) with its bytes, or its link target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_symlink() {
                let target = fs::read_link(&p).unwrap();
                out.insert(p, target.to_string_lossy().as_bytes().to_vec());
            } else if t.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A scratch base (the llama fixture, HF layout) and PEFT adapter.
struct Scratch {
    tmp: tempfile::TempDir,
    base: PathBuf,
    adapter: PathBuf,
}

fn scratch() -> Scratch {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let adapter = tmp.path().join("adapter");
    copy_dir(&fixtures().join("models/llama/hf"), &base);
    copy_dir(&fixtures().join("adapters/peft-llama-qv"), &adapter);
    Scratch { tmp, base, adapter }
}

fn merge(s: &Scratch, adapter: &str, out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["merge", "--checkpoint"])
        .arg(&s.base)
        .arg("--adapter")
        .arg(adapter)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Greedy ids of the checkpoint at `dir` for the adapter's reference prompt.
fn greedy(dir: &Path) -> serde_json::Value {
    let r: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(fixtures().join("adapters/peft-llama-qv/reference.json")).unwrap(),
    )
    .unwrap();
    let o = bin()
        .args(["generate", "--checkpoint"])
        .arg(dir)
        .args(["--raw", "--temperature", "0", "--max-new-tokens", "16"])
        .args(["--json", "--prompt", r["prompt"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["generated_ids"], r["greedy_new_ids"], "{}", dir.display());
    v
}

/// Names in `dir` (hidden staging folders included).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_out_that_is_holds_or_lies_inside_an_input_is_refused_before_writing() {
    let s = scratch();
    let before = snapshot(s.tmp.path());
    let link = s.tmp.path().join("link-to-base");
    std::os::unix::fs::symlink(&s.base, &link).unwrap();
    let adapter = s.adapter.to_str().unwrap().to_string();
    for out in [
        s.base.clone(),
        s.base.join("sub"),
        link.clone(),
        link.join("sub"),
        s.tmp.path().to_path_buf(),
        s.adapter.clone(),
        s.adapter.join("merged"),
    ] {
        for force in [&[][..], &["--force"][..]] {
            let o = merge(&s, &adapter, &out, force);
            assert!(!o.status.success(), "{} {force:?}", out.display());
            assert!(
                stderr(&o).contains("input"),
                "{}: {}",
                out.display(),
                stderr(&o)
            );
        }
    }
    fs::remove_file(&link).unwrap();
    assert_eq!(snapshot(s.tmp.path()), before, "nothing changed");
    // The base still loads and generates.
    let o = bin()
        .args(["generate", "--checkpoint"])
        .arg(&s.base)
        .args(["--prompt", "x", "--max-new-tokens", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_full_out_needs_force_and_is_then_replaced_whole() {
    let s = scratch();
    // An older, sharded checkpoint of another model where the merge is to go.
    let out = s.tmp.path().join("out");
    copy_dir(&fixtures().join("models/qwen2/hf"), &out);
    fs::write(out.join("model.safetensors.index.json"), "{}").unwrap();
    let before = snapshot(&out);
    let adapter = s.adapter.to_str().unwrap().to_string();
    let o = merge(&s, &adapter, &out, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(snapshot(&out), before, "refused before writing");
    let o = merge(&s, &adapter, &out, &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let allowed = [
        "config.json",
        "graftlm_merge.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ];
    for n in names(&out) {
        assert!(allowed.contains(&n.as_str()), "only the new files, not {n}");
    }
    assert!(!out.join("model.safetensors.index.json").exists());
    greedy(&out);
    assert_eq!(names(s.tmp.path()), ["adapter", "base", "out"]);
}

#[test]
fn symlinks_already_in_out_are_never_written_through() {
    let s = scratch();
    let out = s.tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let victim = s.tmp.path().join("victim.txt");
    fs::write(&victim, "precious").unwrap();
    for name in [
        "model.safetensors",
        ".model.safetensors.partial",
        "config.json",
        "tokenizer.json",
    ] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    let o = merge(&s, s.adapter.to_str().unwrap(), &out, &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    for e in fs::read_dir(&out).unwrap().flatten() {
        assert!(
            !fs::symlink_metadata(e.path())
                .unwrap()
                .file_type()
                .is_symlink(),
            "{:?}",
            e.path()
        );
    }
    greedy(&out);
    // An `--out` that is itself a link is refused, whatever it points to.
    let link = s.tmp.path().join("out-link");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let o = merge(&s, s.adapter.to_str().unwrap(), &link, &["--force"]);
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
}

/// The scale recorded in `graftlm_merge.json` and in the weights file's own metadata.
fn recorded_scales(out: &Path) -> (f64, f64) {
    let prov: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("graftlm_merge.json")).unwrap()).unwrap();
    let bytes = fs::read(out.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let inner: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["graftlm_merge"].as_str().unwrap()).unwrap();
    (
        prov["adapters"][0]["scale"].as_f64().unwrap(),
        inner["adapters"][0]["scale"].as_f64().unwrap(),
    )
}

#[test]
fn concurrent_merges_into_one_out_leave_one_complete_output() {
    let s = scratch();
    for force in [false, true] {
        let out = s.tmp.path().join(format!("out-{force}"));
        let children: Vec<_> = [0.5, 1.0, 1.5, 2.0]
            .iter()
            .map(|scale| {
                let mut c = bin();
                c.args(["merge", "--checkpoint"])
                    .arg(&s.base)
                    .arg("--adapter")
                    .arg(format!("{}@{scale}", s.adapter.display()))
                    .arg("--out")
                    .arg(&out)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                if force {
                    c.arg("--force");
                }
                c.spawn().unwrap()
            })
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let won = outputs.iter().filter(|o| o.status.success()).count();
        assert!(won >= 1, "one merge completes");
        if !force {
            assert_eq!(won, 1, "without --force exactly one output is kept");
        }
        for o in outputs.iter().filter(|o| !o.status.success()) {
            let e = stderr(o);
            assert!(
                e.contains("not empty") || e.contains("another process"),
                "a clean refusal: {e}"
            );
        }
        let (a, b) = recorded_scales(&out);
        assert_eq!(a, b, "provenance and weights come from one merge");
    }
    assert_eq!(
        names(s.tmp.path()),
        ["adapter", "base", "out-false", "out-true"],
        "no staging folder left behind"
    );
}

#[test]
fn a_full_disk_leaves_nothing_behind() {
    let s = scratch();
    let out = s.tmp.path().join("out");
    // A file-size limit makes writes fail (EFBIG) partway through the weights, as a full disk
    // would; SIGXFSZ is ignored so the write returns an error instead of killing the process.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 64; trap '' XFSZ; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_graftlm"))
        .args(["merge", "--checkpoint"])
        .arg(&s.base)
        .arg("--adapter")
        .arg(&s.adapter)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success(), "the write must fail");
    assert!(
        stderr(&o).to_lowercase().contains("large"),
        "{}",
        stderr(&o)
    );
    assert_eq!(names(s.tmp.path()), ["adapter", "base"], "nothing left");
}

#[test]
fn an_absurd_alpha_or_scale_is_refused_and_nothing_is_written() {
    let s = scratch();
    let cfg_path = s.adapter.join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["lora_alpha"] = serde_json::json!(1e38);
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = s.tmp.path().join("out");
    let o = merge(&s, s.adapter.to_str().unwrap(), &out, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("lora_alpha") && e.contains("adapter_config.json"),
        "{e}"
    );
    assert_eq!(names(s.tmp.path()), ["adapter", "base"]);
    // Same with generate (separate): refused, not garbage.
    let o = bin()
        .args(["generate", "--checkpoint"])
        .arg(&s.base)
        .arg("--adapter")
        .arg(&s.adapter)
        .args(["--prompt", "x", "--max-new-tokens", "2"])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("lora_alpha"));
    // A sane adapter with an absurd run-time scale: refused, naming the scale.
    copy_dir(&fixtures().join("adapters/peft-llama-qv"), &s.adapter);
    let o = merge(&s, &format!("{}@1e30", s.adapter.display()), &out, &[]);
    assert!(stderr(&o).contains("scale"), "{}", stderr(&o));
    assert!(!out.exists());
}
