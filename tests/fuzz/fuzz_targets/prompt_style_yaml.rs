//! LitGPT `prompt_style.yaml`, then the style is applied.
#![no_main]
use graftlm_fuzz::{check, put};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = put("fuzz/seeds/tiny-lit", "prompt_style.yaml", data);
    if let Some(Some(style)) = check(&dir, graftlm::PromptStyle::load(&dir)) {
        let _ = style.apply("What is 2+2?", Some("be brief"));
    }
});
