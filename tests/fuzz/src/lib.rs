//! The harness shared by graftlm's fuzz targets.
//!
//! graftlm reads files, not byte slices, so each target writes libFuzzer's input as one file inside
//! a private copy of a fixture directory (made once per process, in `/dev/shm` when it exists) and
//! runs the same public loader a user would call. Any panic, hang (`-timeout`) or oversized
//! allocation (`-malloc_limit_mb`) is a finding; so is an error whose message does not name the
//! directory it came from (every file error must say which file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use graftlm::{Error, ModelConfig};

/// `tests/` of the graftlm checkout this harness was built from.
fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("graftlm-fuzz-{}", std::process::id()))
}

/// A private copy of `tests/<fixture>` (its plain files), made on first use.
pub fn workdir(fixture: &str) -> PathBuf {
    static DIRS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut dirs = DIRS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    dirs.entry(fixture.to_string())
        .or_insert_with(|| {
            let src = tests_dir().join(fixture);
            let dst = scratch_root().join(fixture.replace('/', "_"));
            std::fs::create_dir_all(&dst).expect("create fuzz scratch directory");
            for e in std::fs::read_dir(&src).expect("fixture directory") {
                let e = e.expect("fixture entry");
                if e.path().is_file() {
                    std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy fixture");
                }
            }
            dst
        })
        .clone()
}

/// Writes `data` as `<workdir(fixture)>/<file>` and returns the directory.
pub fn put(fixture: &str, file: &str, data: &[u8]) -> PathBuf {
    let dir = workdir(fixture);
    std::fs::write(dir.join(file), data).expect("write fuzz input");
    dir
}

/// Restores `file` in the work copy of `fixture` to the committed version.
pub fn restore(fixture: &str, file: &str) {
    let dir = workdir(fixture);
    std::fs::copy(tests_dir().join(fixture).join(file), dir.join(file)).expect("restore fixture");
}

/// The configuration adapters are checked against (the llama fixture, HF layout).
pub fn llama_config() -> &'static ModelConfig {
    static CFG: OnceLock<ModelConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        graftlm::Checkpoint::open(tests_dir().join("fixtures/models/llama/hf"))
            .expect("llama fixture")
            .config
    })
}

/// An error must name the directory (or a file in it) that caused it.
pub fn check<T>(dir: &Path, r: Result<T, Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = e.to_string();
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                msg.contains(name),
                "error does not name its file ({}): {msg}",
                dir.display()
            );
            None
        }
    }
}

/// Opens a base checkpoint and reads every tensor through the name table, as `load` does before
/// it builds the model; also exercises the derived figures `inspect` prints.
pub fn load_base(dir: &Path) {
    let Some(ck) = check(dir, graftlm::Checkpoint::open(dir)) else {
        return;
    };
    let cfg = &ck.config;
    let _ = (cfg.family_name(), cfg.features(), cfg.parameter_count());
    let Some(files) = check(dir, ck.weights()) else {
        return;
    };
    let _ = check(dir, graftlm::checkpoint::names::load(cfg, &files));
}

/// Finds and reads the adapter in `dir` against the llama fixture.
pub fn read_adapter(dir: &Path) {
    let cfg = llama_config();
    let _ = check(
        dir,
        graftlm::adapters::locate(dir, None).and_then(|l| graftlm::adapters::read(&l, cfg, None)),
    );
}
