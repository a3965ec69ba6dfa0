//! The bad-input catalogue, continued (issue 24): inputs built to exhaust the reader rather than
//! to be wrong — deeply nested or self-copying pickles, FIFOs and devices where files should be,
//! configs that ask for huge tables, and files that change while graftlm reads them. Each must
//! give a typed error (or, where the input is valid, work) without a crash, a hang or a huge
//! allocation.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{fixtures, repo};
use graftlm::checkpoint::WeightFiles;
use graftlm::{Checkpoint, Error};

type B = graftlm::backend::DefaultCpu;

fn scratch(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    fs::create_dir_all(&dir).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    (tmp, dir)
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs` (a hang).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {secs} s (a hang)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the call panicked"),
    }
}

/// Resident memory of this process in MiB (Linux).
fn rss_mib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Pickles that nest thousands deep, copy values through the memo, or flatten into an
/// exponential tree (`tests/fuzz/make_pth_seeds.py`): a typed error naming the file, fast.
#[test]
fn hostile_pickles_are_bounded() {
    let seeds = repo().join("tests/fuzz/seeds/pth-deep");
    let mut deep = 0;
    for e in fs::read_dir(&seeds).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let (_t, dir) = scratch(&fixtures().join("llama/lit"));
        fs::copy(e.path(), dir.join("lit_model.pth")).unwrap();
        let d = dir.clone();
        let r = within(20, &name, move || {
            Checkpoint::open(&d)?
                .load::<B>(&Default::default())
                .map(|_| ())
        });
        let err = r.expect_err(&name);
        let msg = err.to_string();
        assert!(msg.contains("lit_model.pth"), "{name}: {msg}");
        if name.starts_with("deep-") {
            assert!(msg.contains("nested more than"), "{name}: {msg}");
            deep += 1;
        }
        if name.starts_with("shared-dict") {
            assert!(
                msg.contains("more work than its size allows"),
                "{name}: {msg}"
            );
        }
    }
    assert!(deep >= 4, "the deep seeds are there");
}

/// A FIFO (or a device) where a config, a shard or a tokenizer should be is refused before it is
/// opened for reading: opening a FIFO would wait for a writer forever.
#[cfg(target_os = "linux")]
#[test]
fn special_files_are_refused_without_hanging() {
    for file in [
        "config.json",
        "model-00001-of-00003.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ] {
        let (_t, dir) = scratch(&fixtures().join("llama/hf"));
        let p = dir.join(file);
        fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc_mkfifo(c.as_ptr()) }, 0);
        let d = dir.clone();
        let err = within(20, file, move || {
            let ck = Checkpoint::open(&d)?;
            graftlm::Tokenizer::from_dir(&d)?;
            ck.load::<B>(&Default::default()).map(|_| ())
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(file) && msg.contains("FIFO"), "{file}: {msg}");
    }
    // A link to a character device.
    let (_t, dir) = scratch(&fixtures().join("llama/hf"));
    fs::remove_file(dir.join("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("config.json")).unwrap();
    let err = within(20, "device", move || Checkpoint::open(&dir).map(|_| ())).unwrap_err();
    assert!(err.to_string().contains("device"), "{err}");
}

#[cfg(target_os = "linux")]
unsafe fn libc_mkfifo(path: *const std::ffi::c_char) -> i32 {
    extern "C" {
        fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    }
    mkfifo(path, 0o600)
}

/// A config that allows 2^24 positions loads and generates with memory for what is used: the
/// RoPE tables and the KV cache grow with the positions reached (they took gigabytes at load).
#[test]
fn a_huge_context_length_costs_nothing_until_used() {
    for (layout, file, key) in [
        ("lit", "model_config.yaml", "block_size"),
        ("hf", "config.json", "max_position_embeddings"),
    ] {
        let (_t, dir) = scratch(&fixtures().join("llama").join(layout));
        let p = dir.join(file);
        let text = fs::read_to_string(&p).unwrap();
        let changed = if layout == "hf" {
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v[key] = serde_json::json!(1u64 << 24);
            v.to_string()
        } else {
            let mut v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            v[key] = serde_yaml::Value::from(1u64 << 24);
            serde_yaml::to_string(&v).unwrap()
        };
        fs::write(&p, changed).unwrap();
        let before = rss_mib();
        let d = dir.clone();
        let ids = within(60, layout, move || {
            let ck = Checkpoint::open(&d).unwrap();
            assert_eq!(ck.config.block_size, 1 << 24);
            let model = ck.load::<B>(&Default::default()).unwrap();
            let tok = graftlm::Tokenizer::from_dir(&d).unwrap();
            let prompt = tok.encode("The function returns").unwrap();
            let opts = graftlm::GenerateOptions::new(8, graftlm::SamplingParams::greedy());
            graftlm::generate(&model, &tok, &prompt, &opts, &mut |_| true)
                .unwrap()
                .generated_ids
        });
        assert_eq!(ids.len(), 8, "{layout}");
        let grew = rss_mib().saturating_sub(before);
        assert!(grew < 256, "{layout}: {grew} MiB for a tiny model");
    }
}

/// A weight file truncated after it was opened: reading it is an error naming the file, never a
/// crash (it was memory-mapped, so this was SIGBUS).
#[test]
fn a_file_truncated_under_a_load_is_an_error_not_a_crash() {
    for (model, file) in [
        ("llama/hf", "model-00002-of-00003.safetensors"),
        ("llama-bf16/hf", "model.safetensors"),
        ("llama/lit", "lit_model.pth"),
    ] {
        let (_t, dir) = scratch(&fixtures().join(model));
        let ck = Checkpoint::open(&dir).unwrap();
        let files = ck.weights().unwrap();
        let path = dir.join(file);
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
        let names: Vec<String> = files
            .tensors()
            .keys()
            .filter(|n| files.file_of(n) == path)
            .cloned()
            .collect();
        let mut failed = 0;
        for n in &names {
            let lent = files.with_in_place(n, |_, _| {});
            let read = files.read_f32(n);
            for r in [lent.map(|_| ()), read.map(|_| ())] {
                if let Err(e) = r {
                    assert!(e.to_string().contains(file), "{model} {n}: {e}");
                    assert!(matches!(e, Error::Io { .. } | Error::Parse { .. }), "{e}");
                    failed += 1;
                }
            }
        }
        assert!(failed > 0, "{model}: the lost tensors are reported");
        let err = ck.load::<B>(&Default::default()).unwrap_err();
        assert!(err.to_string().contains(file), "{model}: {err}");
    }
}

/// The same, racing: another thread truncates and restores the file while loads run. Every load
/// either succeeds (it read the whole file) or fails with an error; the process never dies.
#[test]
fn loads_racing_a_truncating_writer_survive() {
    let (_t, dir) = scratch(&fixtures().join("llama/hf"));
    let path = dir.join("model-00003-of-00003.safetensors");
    let bytes = fs::read(&path).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path, bytes) = (stop.clone(), path.clone(), bytes.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(bytes.len() as u64 / 2).unwrap();
                drop(f);
                fs::write(&path, &bytes).unwrap();
            }
        })
    };
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..40 {
        match Checkpoint::open(&dir).and_then(|c| c.load::<B>(&Default::default())) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(e.to_string().contains("safetensors"), "{e}");
                failed += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(ok + failed, 40);
    let _ = WeightFiles::open_dir(&dir).unwrap();
}
