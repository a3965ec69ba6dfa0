//! Generates the C header from `src/capi` with cbindgen into `$OUT_DIR/graftlm.h`.
//! `tests/header.rs` fails when the checked-in `include/graftlm.h` differs; refresh it with
//! `GRAFTLM_UPDATE_HEADER=1 cargo build`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/capi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=GRAFTLM_UPDATE_HEADER");
    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("graftlm.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    // Only the C API module (and the modules it declares) is parsed: the rest of the crate uses
    // generic types cbindgen cannot follow.
    let builder = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/capi/mod.rs"));
    let fail = |e: String| {
        // Never break a Rust build over the header; `tests/header.rs` reports it.
        println!("cargo:warning=cbindgen could not generate the C header: {e}");
        let _ = std::fs::write(&out, format!("/* cbindgen failed: {e} */\n"));
    };
    match std::panic::catch_unwind(move || builder.generate()) {
        Ok(Ok(bindings)) => {
            bindings.write_to_file(&out);
            if std::env::var_os("GRAFTLM_UPDATE_HEADER").is_some() {
                bindings.write_to_file(crate_dir.join("include/graftlm.h"));
            }
        }
        Ok(Err(e)) => fail(e.to_string()),
        Err(_) => fail("cbindgen panicked".into()),
    }
}
