//! LitGPT `model_config.yaml` (then the weights are read against whatever it declares).
#![no_main]
use graftlm_fuzz::{load_base, put};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    load_base(&put("fuzz/seeds/tiny-lit", "model_config.yaml", data));
});
