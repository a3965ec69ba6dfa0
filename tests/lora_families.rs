//! A LoRA on every architecture family, from PEFT (HF layout) and LitGPT (LitGPT layout): separate
//! and merged logits match the reference library within 1e-4, greedy tokens are identical, and
//! unmerge restores the base (fixtures: `tests/fixtures/make_family_adapters.py`; the LLaMA-Adapter
//! fixtures made there are checked in `tests/llama_adapter.rs`).

mod common;

use common::adapter::{check, fixtures, FAMILIES};

fn family(arch: &str) {
    for format in ["peft", "lit"] {
        check(&fixtures().join(format!("adapters/families/{arch}-{format}")));
    }
}

macro_rules! families {
    ($($arch:ident),* $(,)?) => {
        $(
            #[test]
            fn $arch() {
                family(stringify!($arch));
            }
        )*
        const TESTED: &[&str] = &[$(stringify!($arch)),*];
    };
}

families!(
    gptneox, qwen2, phi2, mistral, gemma, gemma2, phi3, stablelm, llama32, qwen3, olmo2, falcon7b,
    falcon40b
);

/// Every family's PEFT and LitGPT LoRA on the GPU (`cargo test --features cuda`, `benches/cuda.sh`).
#[cfg(feature = "cuda")]
#[test]
fn cuda_every_family() {
    for arch in FAMILIES {
        for format in ["peft", "lit"] {
            common::adapter::check_on::<graftlm::backend::Cuda>(
                &fixtures().join(format!("adapters/families/{arch}-{format}")),
            );
        }
    }
}

/// Every family and every generated fixture is covered by a test above.
#[test]
fn every_fixture_is_tested() {
    assert_eq!(TESTED, FAMILIES);
    for e in std::fs::read_dir(fixtures().join("adapters/families")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let arch = name.split_once('-').unwrap().0;
        assert!(TESTED.contains(&arch), "{name} has no test");
    }
}
