//! LitGPT `hyperparameters.yaml` of a LoRA step folder.
#![no_main]
use graftlm_fuzz::{put, read_adapter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    read_adapter(&put(
        "fixtures/adapters/litgpt-lora-llama/step-000002",
        "hyperparameters.yaml",
        data,
    ));
});
