//! The PyTorch `.pth` zip + pickle subset: as a LitGPT base model, a LitGPT LoRA file and a
//! LLaMA-Adapter v2 file.
#![no_main]
use graftlm_fuzz::{load_base, put, read_adapter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    load_base(&put("fuzz/seeds/tiny-lit", "lit_model.pth", data));
    read_adapter(&put(
        "fixtures/adapters/litgpt-lora-llama/step-000002",
        "lit_model.pth.lora",
        data,
    ));
    read_adapter(&put(
        "fixtures/adapters/litgpt-adapter-v2-llama/final",
        "lit_model.pth.adapter_v2",
        data,
    ));
});
