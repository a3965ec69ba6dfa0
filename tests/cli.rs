//! The `graftlm` command line: flags and `--json` output are a contract.
#![cfg(feature = "cli")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graftlm"))
}

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/demo/model")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn generate_json_has_the_contract_fields() {
    let out = bin()
        .args(["generate", "--checkpoint"])
        .arg(demo())
        .args([
            "--prompt",
            "The Python interpreter",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "--json",
        ])
        .output()
        .unwrap();
    let v = json(&out);
    let ids = |k: &str| {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{k} missing: {v}"))
            .len()
    };
    assert_eq!(ids("prompt_ids"), 4);
    assert_eq!(ids("generated_ids"), 12);
    assert!(
        v["text"].as_str().unwrap().starts_with(", and in the"),
        "{v}"
    );
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["prompt_style"], "Default");
}

#[test]
fn prompt_from_stdin_and_raw_mode() {
    let mut child = bin()
        .args(["generate", "--checkpoint"])
        .arg(demo())
        .args([
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
            "--raw",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"The Python interpreter")
        .unwrap();
    let v = json(&child.wait_with_output().unwrap());
    assert_eq!(v["prompt"], "The Python interpreter");
    assert!(v["prompt_style"].is_null());
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 5);
}

#[test]
fn streaming_output_is_the_text() {
    let out = bin()
        .args(["generate", "--checkpoint"])
        .arg(demo())
        .args([
            "--prompt",
            "The Python interpreter",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(", and in the"), "{text:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens"));
}

#[test]
fn errors_exit_1_and_name_the_problem() {
    let out = bin()
        .args(["generate", "--checkpoint", "/no/such/dir", "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("/no/such/dir"),
        "{err}"
    );

    let out = bin()
        .args(["generate", "--checkpoint"])
        .arg(demo())
        .args(["--prompt", "x", "--top-p", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"));

    let out = bin()
        .args(["generate", "--checkpoint"])
        .arg(demo())
        .args(["--prompt", "x", "--max-new-tokens", "100000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("block_size"));
}

#[test]
fn inspect_json_describes_the_checkpoint() {
    let out = bin()
        .arg("inspect")
        .arg(demo())
        .arg("--json")
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["format"], "LitGPT");
    assert_eq!(v["name"], "graftlm-demo");
    assert_eq!(v["n_layer"], 4);
    assert_eq!(v["parameters"], 1000576);
    assert_eq!(v["prompt_style"], "Default");
}
