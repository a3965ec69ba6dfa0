//! PEFT `adapter_config.json` (target patterns, ranks, alphas, layer lists).
#![no_main]
use graftlm_fuzz::{put, read_adapter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    read_adapter(&put(
        "fixtures/adapters/peft-llama-qv",
        "adapter_config.json",
        data,
    ));
});
