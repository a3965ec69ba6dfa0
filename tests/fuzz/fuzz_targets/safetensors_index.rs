//! `model.safetensors.index.json` of a sharded checkpoint.
#![no_main]
use graftlm_fuzz::{load_base, put};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    load_base(&put(
        "fixtures/models/llama/hf",
        "model.safetensors.index.json",
        data,
    ));
});
