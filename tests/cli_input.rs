//! What the command line reads from standard input is bounded in line with the model's context
//! (issue 24, class 6): an endless prompt or chat line is refused or skipped, never read into
//! memory without limit.
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

/// Runs `cmd` feeding `input` from another thread (the child may stop reading early).
fn fed(cmd: &mut Command, input: Vec<u8>) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // a broken pipe is fine: the child stopped reading
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn an_endless_prompt_on_stdin_is_refused() {
    // The demo model's context is small, so the limit is the floor: 1 MiB.
    let out = fed(
        bin().args(["generate", "--checkpoint"]).arg(demo()),
        vec![b'a'; 3 << 20],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<stdin>") && err.contains("more than"),
        "{err}"
    );
}

#[test]
fn batch_requests_are_bounded_too() {
    let mut input = Vec::new();
    while input.len() < 9 << 20 {
        input.extend_from_slice(b"{\"prompt\": \"The Python interpreter\"}\n");
    }
    let out = fed(bin().args(["batch", "--checkpoint"]).arg(demo()), input);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than"), "{err}");
}

#[test]
fn chat_skips_an_endless_line_and_goes_on() {
    let mut input = vec![b'x'; 3 << 20];
    input.extend_from_slice(b"\nThe Python interpreter\n/quit\n");
    let out = fed(
        bin().args([
            "chat",
            "--checkpoint",
            demo().to_str().unwrap(),
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
        ]),
        input,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("was skipped"), "{stdout}");
    let after = stdout.split("was skipped").nth(1).unwrap_or("");
    assert!(
        !after.trim().is_empty(),
        "the next line is answered: {stdout}"
    );
}
