//! The `graftlm` command line: flags and `--json` output are a contract.
#![cfg(feature = "cli")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graftlm"))
}

/// Runs `cmd` with `input` on its standard input; its output, captured.
fn fed(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
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

/// `--threads N` (any subcommand) sizes the CPU thread pool; the tokens do not depend on it.
#[test]
fn threads_flag() {
    let run = |threads: &str| {
        bin()
            .args(["--threads", threads, "generate", "--checkpoint"])
            .arg(demo())
            .args(["--prompt", "The Python interpreter", "--temperature", "0"])
            .args(["--max-new-tokens", "8", "--json"])
            .output()
            .unwrap()
    };
    let (one, three) = (json(&run("1")), json(&run("3")));
    assert_eq!(one["generated_ids"], three["generated_ids"]);
    let zero = run("0");
    assert_eq!(zero.status.code(), Some(1));
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(
        err.contains("threads") && err.contains("1 to 1024"),
        "{err}"
    );
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
    let out = fed(
        bin().args(["generate", "--checkpoint"]).arg(demo()).args([
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
            "--raw",
            "--json",
        ]),
        b"The Python interpreter",
    );
    let v = json(&out);
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

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn generate_with_an_adapter_run_dir_and_step_finds_the_base() {
    let run = fixtures().join("adapters/litgpt-lora-llama");
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("step-000004/reference.json")).unwrap(),
    )
    .unwrap();
    // Run from another directory: the recorded relative base is found from the adapter's ancestors.
    let out = bin()
        .current_dir(std::env::temp_dir())
        .args(["generate", "--adapter"])
        .arg(&run)
        .args([
            "--step",
            "4",
            "--raw",
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "--json",
        ])
        .arg("--prompt")
        .arg(r["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["generated_ids"], r["greedy_new_ids"], "{v}");
    assert_eq!(v["adapters"][0]["step"], 4);
    assert_eq!(v["adapters"][0]["format"], "litgpt-lora");
    assert!(
        v["base"].as_str().unwrap().ends_with("models/llama/lit"),
        "{v}"
    );

    // --merge gives the same tokens; @0 gives the base model's.
    let merged = bin()
        .args(["generate", "--merge", "--adapter"])
        .arg(run.join("step-000004"))
        .args([
            "--raw",
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "--json",
            "--prompt",
        ])
        .arg(r["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(json(&merged)["generated_ids"], r["greedy_new_ids"]);
    let base_ref: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("models/llama/reference.json")).unwrap(),
    )
    .unwrap();
    let zero = bin()
        .arg("generate")
        .arg("--adapter")
        .arg(format!("{}@0", run.join("step-000004").display()))
        .args([
            "--raw",
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "--json",
            "--prompt",
        ])
        .arg(r["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(json(&zero)["generated_ids"], base_ref["greedy_new_ids"]);
}

#[test]
fn adapter_errors_are_clear() {
    let out = bin()
        .args(["generate", "--checkpoint"])
        .arg(fixtures().join("models/gptneox/lit"))
        .arg("--adapter")
        .arg(fixtures().join("adapters/litgpt-lora-llama/final"))
        .args(["--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lit_model.pth.lora"), "{err}");

    let out = bin()
        .args(["generate", "--adapter"])
        .arg(fixtures().join("adapters/litgpt-lora-llama"))
        .args(["--step", "3", "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2, 4, 6, final"));
}

#[test]
fn merge_command_writes_a_loadable_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("merged");
    let out = bin()
        .args(["merge", "--adapter"])
        .arg(fixtures().join("adapters/peft-llama-qv"))
        .arg("--out")
        .arg(&out_dir)
        .arg("--json")
        .output()
        .unwrap();
    let v = json(&out);
    assert!(v["base_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("fnv1a64:"));
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("adapters/peft-llama-qv/reference.json")).unwrap(),
    )
    .unwrap();
    let gen = bin()
        .args(["generate", "--checkpoint"])
        .arg(&out_dir)
        .args([
            "--raw",
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "--json",
            "--prompt",
        ])
        .arg(r["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(json(&gen)["generated_ids"], r["greedy_new_ids"]);
}

#[test]
fn chat_switches_steps_and_merges_without_reloading() {
    let out = fed(
        bin()
            .args(["chat", "--adapter"])
            .arg(fixtures().join("adapters/litgpt-lora-llama/step-000004"))
            .args(["--temperature", "0", "--max-new-tokens", "4"]),
        b"Say hi\n/step 2\n/adapters\n/merge\n/unmerge\n/use none\n/scale nope 2\n/quit\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "[attached and using litgpt-lora-llama/step-000002]",
        "litgpt-lora-llama/step-000002 (active)",
        "[merged all active adapters]",
        "[unmerged all]",
        "[base model only]",
        "no adapter named `nope`",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
}

#[test]
fn generate_with_a_llama_adapter_v1_step() {
    let run = fixtures().join("adapters/litgpt-adapter-llama");
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("step-000004/reference.json")).unwrap(),
    )
    .unwrap();
    let out = bin()
        .args(["generate", "--adapter"])
        .arg(&run)
        .args([
            "--step",
            "4",
            "--raw",
            "--temperature",
            "0",
            "--max-new-tokens",
            "16",
            "--json",
        ])
        .arg("--prompt")
        .arg(r["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["generated_ids"], r["greedy_new_ids"], "{v}");
    assert_eq!(v["adapters"][0]["format"], "litgpt-adapter");
    // Merging a LLaMA-Adapter into plain weights is refused clearly.
    let tmp = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["merge", "--adapter"])
        .arg(run.join("final"))
        .arg("--out")
        .arg(tmp.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prefix"));
}

#[test]
fn inspect_names_the_family_and_its_features() {
    let out = bin()
        .arg("inspect")
        .arg(fixtures().join("models/gemma2/hf"))
        .arg("--json")
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["architecture"], "Gemma 2");
    let features: Vec<String> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    for want in [
        "attention soft-capping 5",
        "logit soft-capping 3",
        "sliding window 4 on layers [0, 2]",
        "tied embeddings",
    ] {
        assert!(
            features.iter().any(|f| f == want),
            "missing {want:?} in {features:?}"
        );
    }
}

#[test]
fn inspect_names_every_family() {
    let inspect = |dir: &str| {
        json(
            &bin()
                .arg("inspect")
                .arg(fixtures().join("models").join(dir))
                .arg("--json")
                .output()
                .unwrap(),
        )
    };
    let cases = [
        ("llama/hf", "Llama"),
        ("gptneox/lit", "GPT-NeoX"),
        ("qwen2/hf", "Qwen2"),
        ("qwen3/lit", "Qwen3"),
        ("phi2/hf", "Phi"),
        ("phi3/hf", "Phi-3"),
        ("mistral/lit", "Mistral"),
        ("gemma/hf", "Gemma"),
        ("gemma2/lit", "Gemma 2"),
        ("stablelm/hf", "StableLM"),
        ("olmo2/hf", "OLMo-2"),
        ("olmo2/lit", "OLMo-2"),
        ("falcon7b/hf", "Falcon"),
        ("falcon40b/lit", "Falcon"),
    ];
    for (dir, family) in cases {
        assert_eq!(inspect(dir)["architecture"], family, "{dir}");
    }
    // The features that make OLMo-2 and Falcon-7B what they are.
    for (dir, want) in [
        ("olmo2/hf", "q/k norms over all heads"),
        ("olmo2/lit", "no pre-attention/pre-MLP norms"),
        ("falcon7b/hf", "multi-query attention"),
        ("falcon7b/lit", "shared attention norm"),
    ] {
        let feats = inspect(dir)["features"].to_string();
        assert!(feats.contains(want), "{dir}: {feats}");
    }
}

#[test]
fn batch_gives_each_request_what_generate_gives_it_alone() {
    let base = fixtures().join("models/llama/hf");
    let qv = fixtures().join("adapters/peft-llama-qv");
    let rs = fixtures().join("adapters/peft-llama-rslora");
    let flags = ["--raw", "--temperature", "0", "--max-new-tokens", "12"];
    // (prompt, adapter as the request names it, the adapter `generate` gets alone)
    let rs_path = rs.display().to_string();
    let cases: [(&str, Option<&str>, Option<&PathBuf>); 4] = [
        ("Hello there", Some("peft-llama-qv"), Some(&qv)),
        ("The quick brown fox", None, None),
        ("Once upon a time", Some(rs_path.as_str()), Some(&rs)),
        ("A", Some("peft-llama-rslora"), Some(&rs)),
    ];
    let lines: String = cases
        .iter()
        .map(|(p, a, _)| serde_json::json!({"prompt": p, "adapter": a}).to_string() + "\n")
        .collect();
    let run_batch = |lines: &str| {
        fed(
            bin()
                .arg("batch")
                .arg("--checkpoint")
                .arg(&base)
                .arg("--adapter")
                .arg(&qv)
                .arg("--adapter")
                .arg(&rs)
                .args(flags),
            lines.as_bytes(),
        )
    };
    let out = run_batch(&lines);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), cases.len());
    for (i, ((prompt, _, alone), g)) in cases.iter().zip(&got).enumerate() {
        let mut cmd = bin();
        cmd.arg("generate").arg("--checkpoint").arg(&base);
        if let Some(a) = alone {
            cmd.arg("--adapter").arg(a);
        }
        let want = json(
            &cmd.args(flags)
                .args(["--json", "--prompt", prompt])
                .output()
                .unwrap(),
        );
        assert_eq!(g["index"], i);
        assert_eq!(
            g["generated_ids"], want["generated_ids"],
            "request {i}: {g}"
        );
        assert_eq!(g["text"], want["text"], "request {i}");
        assert_eq!(g["prompt_ids"], want["prompt_ids"], "request {i}");
        assert_eq!(g["stop_reason"], want["stop_reason"], "request {i}");
    }
    // A path given to --adapter stands for that adapter's name.
    assert_eq!(got[2]["adapter"], "peft-llama-rslora");
    assert_eq!(got[1]["adapter"], serde_json::Value::Null);

    // Errors exit 1 and say what is wrong: an unknown adapter (listing the known ones), a bad line.
    let out = run_batch("{\"prompt\": \"x\", \"adapter\": \"nope\"}\n");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(e.contains("`nope`") && e.contains("peft-llama-qv"), "{e}");
    let out = run_batch("{\"prompt\": \"x\"}\n{\"prompt\": 1}\n");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(e.contains("line 2") && e.contains("`prompt`"), "{e}");
    assert!(out.stdout.is_empty(), "nothing written on error");
}
