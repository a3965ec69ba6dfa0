//! The checked-in C header must be what cbindgen generates from `src/capi` now.

#[test]
fn checked_in_header_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/graftlm.h"));
    assert!(!generated.starts_with("/* cbindgen failed"), "{generated}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include/graftlm.h");
    let checked_in = std::fs::read_to_string(&path).expect("include/graftlm.h exists");
    assert!(
        checked_in == generated,
        "include/graftlm.h is stale: run `GRAFTLM_UPDATE_HEADER=1 cargo build` and commit it"
    );
}
