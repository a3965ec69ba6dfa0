//! Seeded mutation of every file type graftlm reads (weights, configs, tokenizer, adapter metadata):
//! truncations, byte flips and splices must give typed errors or valid results — never a panic,
//! a hang or an unbounded allocation. (Coverage-guided fuzzing is issue 6's next step.)

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, orig: &[u8]) -> Vec<u8> {
    let mut b = orig.to_vec();
    match rng.below(5) {
        0 => b.truncate(rng.below(b.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            let i = rng.below(b.len());
            if let Some(x) = b.get_mut(i) {
                *x = [0u8, 0xff, b'9', b'"', b'{', b'-'][rng.below(6)];
            }
        }
        3 => {
            let (i, j) = (rng.below(b.len()), rng.below(b.len()));
            let chunk: Vec<u8> = b[i.min(j)..i.max(j)].iter().take(64).copied().collect();
            let at = rng.below(b.len());
            b.splice(at..at, chunk);
        }
        _ => {
            // Overwrite 8 bytes with a huge little-endian number (sizes, offsets, lengths).
            let i = rng.below(b.len().saturating_sub(8));
            if b.len() >= 8 {
                b[i..i + 8]
                    .copy_from_slice(&(u64::MAX / (1 + rng.below(1000) as u64)).to_le_bytes());
            }
        }
    }
    b
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Mutates `file` inside a copy of `dir` `rounds` times and runs `load` on each version.
fn hammer(dir: &str, file: &str, rounds: usize, load: &dyn Fn(&Path)) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let orig = fs::read(src.join(file)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("d");
    copy_dir(&src, &work);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ orig.len() as u64);
    for round in 0..rounds {
        let bytes = mutate(&mut rng, &orig);
        fs::write(work.join(file), &bytes).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| load(&work)));
        assert!(
            r.is_ok(),
            "{dir}/{file}: round {round} panicked ({} bytes)",
            bytes.len()
        );
    }
}

fn load_model(d: &Path) {
    let _ = graftlm::Checkpoint::open(d)
        .and_then(|c| c.load::<graftlm::backend::DefaultCpu>(&Default::default()));
}

#[test]
fn weights_files() {
    hammer(
        "tests/fixtures/models/gptneox/lit",
        "lit_model.pth",
        150,
        &load_model,
    );
    hammer(
        "tests/fixtures/models/phi2/hf",
        "model.safetensors",
        150,
        &load_model,
    );
    hammer(
        "tests/fixtures/models/llama/hf",
        "model.safetensors.index.json",
        60,
        &load_model,
    );
}

#[test]
fn config_files() {
    hammer(
        "tests/fixtures/models/llama/lit",
        "model_config.yaml",
        150,
        &|d| {
            let _ = graftlm::Checkpoint::open(d);
        },
    );
    hammer("tests/fixtures/models/qwen2/hf", "config.json", 150, &|d| {
        let _ = graftlm::Checkpoint::open(d);
    });
    hammer("examples/demo/model", "prompt_style.yaml", 60, &|d| {
        let _ = graftlm::PromptStyle::load(d);
    });
}

#[test]
fn tokenizer_files() {
    hammer("examples/demo/model", "tokenizer_config.json", 80, &|d| {
        let _ = graftlm::Tokenizer::from_dir(d);
    });
    hammer("examples/demo/model", "tokenizer.json", 40, &|d| {
        if let Ok(t) = graftlm::Tokenizer::from_dir(d) {
            let _ = t.encode("The Python interpreter");
        }
    });
}

#[test]
fn adapter_files() {
    let base = graftlm::Checkpoint::open(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/llama/hf"),
    )
    .unwrap();
    let read = |d: &Path| {
        let _ = graftlm::adapters::locate(d, None)
            .and_then(|l| graftlm::adapters::read(&l, &base.config, None));
    };
    hammer(
        "tests/fixtures/adapters/peft-llama-qv",
        "adapter_config.json",
        120,
        &read,
    );
    hammer(
        "tests/fixtures/adapters/peft-llama-qv",
        "adapter_model.safetensors",
        120,
        &read,
    );
    hammer(
        "tests/fixtures/adapters/litgpt-lora-llama/step-000002",
        "lit_model.pth.lora",
        120,
        &read,
    );
    hammer(
        "tests/fixtures/adapters/litgpt-lora-llama/step-000002",
        "hyperparameters.yaml",
        80,
        &read,
    );
    hammer(
        "tests/fixtures/adapters/litgpt-adapter-v2-llama/final",
        "lit_model.pth.adapter_v2",
        80,
        &read,
    );
}
