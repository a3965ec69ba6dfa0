//! safetensors headers, dtypes and data offsets: as a base model (tiny Llama, through the name
//! table) and as a PEFT adapter.
#![no_main]
use graftlm_fuzz::{load_base, put, read_adapter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    load_base(&put("fuzz/seeds/tiny-hf", "model.safetensors", data));
    read_adapter(&put(
        "fixtures/adapters/peft-llama-qv",
        "adapter_model.safetensors",
        data,
    ));
});
