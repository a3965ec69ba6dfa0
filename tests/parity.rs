//! Parity with LitGPT and Hugging Face transformers on tiny models of every supported
//! architecture, in both file layouts, on every enabled backend (CPU; CUDA with `--features cuda`): last-position logits,
//! all-position logits without KV cache, token-by-token logits through the cache, and greedy tokens.

mod common;

use common::{assert_close_on, fixtures, reference};
use graftlm::backend::ModelBackend;
use graftlm::generate::logits_to_vec;
use graftlm::{Checkpoint, GenerateOptions, SamplingParams, Tokenizer};

fn check<B: ModelBackend>(name: &str, layout: &str) {
    let device = B::Device::default();
    let r = reference(name);
    let dir = fixtures().join(name).join(layout);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let model = ckpt.load::<B>(&device).unwrap();
    let want_last = if layout == "hf" && !r.hf_logits_last.is_empty() {
        &r.hf_logits_last
    } else {
        &r.logits_last
    };

    // Tokenization follows LitGPT's rules (BOS etc.).
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tok.encode(&r.prompt).unwrap(),
        r.prompt_ids,
        "{name}/{layout}: prompt ids"
    );

    // Last-position logits of the prompt.
    let mut cache = model.new_cache(64);
    let last = logits_to_vec(model.forward(&r.prompt_ids, &mut cache, true).unwrap()).unwrap();
    assert_close_on::<B>(&format!("{name}/{layout} last logits"), &last, want_last);

    // Every position without a cache, and token by token through the cache.
    if !r.seq_logits.is_empty() {
        let vocab = r.seq_logits[0].len();
        let mut cache = model.new_cache(64);
        let all = logits_to_vec(model.forward(&r.prompt_ids, &mut cache, false).unwrap()).unwrap();
        let width = all.len() / r.prompt_ids.len();
        let mut step_cache = model.new_cache(64);
        for (i, want) in r.seq_logits.iter().enumerate() {
            assert_close_on::<B>(
                &format!("{name}/{layout} prefill row {i}"),
                &all[i * width..i * width + vocab],
                want,
            );
            let got = logits_to_vec(
                model
                    .forward(&r.prompt_ids[i..=i], &mut step_cache, true)
                    .unwrap(),
            )
            .unwrap();
            assert_close_on::<B>(&format!("{name}/{layout} cached step {i}"), &got, want);
        }
    }

    // Greedy generation matches LitGPT's tokens.
    let mut opts = GenerateOptions::new(r.max_new_tokens, SamplingParams::greedy());
    opts.stop_tokens = Some(vec![]);
    let out = graftlm::generate(&model, &tok, &r.prompt_ids, &opts, &mut |_| true).unwrap();
    assert_eq!(
        out.generated_ids, r.greedy_new_ids,
        "{name}/{layout}: greedy tokens"
    );
}

macro_rules! parity {
    ($modname:ident, $backend:ty, $feature:literal) => {
        #[cfg(feature = $feature)]
        mod $modname {
            use super::check;
            type B = $backend;
            #[test]
            fn llama_litgpt() {
                check::<B>("llama", "lit");
            }
            #[test]
            fn llama_hf_sharded() {
                check::<B>("llama", "hf");
            }
            #[test]
            fn llama_hf_bf16() {
                check::<B>("llama-bf16", "hf");
            }
            #[test]
            fn gptneox_litgpt() {
                check::<B>("gptneox", "lit");
            }
            #[test]
            fn gptneox_hf() {
                check::<B>("gptneox", "hf");
            }
            #[test]
            fn qwen2_litgpt() {
                check::<B>("qwen2", "lit");
            }
            #[test]
            fn qwen2_hf_tied() {
                check::<B>("qwen2", "hf");
            }
            #[test]
            fn mistral_sliding_window_litgpt() {
                check::<B>("mistral", "lit");
            }
            #[test]
            fn mistral_sliding_window_hf() {
                check::<B>("mistral", "hf");
            }
            #[test]
            fn gemma_litgpt() {
                check::<B>("gemma", "lit");
            }
            #[test]
            fn gemma_hf() {
                check::<B>("gemma", "hf");
            }
            #[test]
            fn phi3_litgpt() {
                check::<B>("phi3", "lit");
            }
            #[test]
            fn phi3_hf_fused() {
                check::<B>("phi3", "hf");
            }
            #[test]
            fn stablelm_litgpt() {
                check::<B>("stablelm", "lit");
            }
            #[test]
            fn stablelm_hf() {
                check::<B>("stablelm", "hf");
            }
            #[test]
            fn llama32_rope_scaling_litgpt() {
                check::<B>("llama32", "lit");
            }
            #[test]
            fn llama32_rope_scaling_hf() {
                check::<B>("llama32", "hf");
            }
            #[test]
            fn qwen3_qk_norm_litgpt() {
                check::<B>("qwen3", "lit");
            }
            #[test]
            fn qwen3_qk_norm_hf() {
                check::<B>("qwen3", "hf");
            }
            #[test]
            fn falcon7b_multi_query_shared_norm_litgpt() {
                check::<B>("falcon7b", "lit");
            }
            #[test]
            fn falcon7b_multi_query_shared_norm_hf() {
                check::<B>("falcon7b", "hf");
            }
            #[test]
            fn falcon40b_grouped_two_norms_litgpt() {
                check::<B>("falcon40b", "lit");
            }
            #[test]
            fn falcon40b_grouped_two_norms_hf() {
                check::<B>("falcon40b", "hf");
            }
            #[test]
            fn olmo2_litgpt() {
                check::<B>("olmo2", "lit");
            }
            #[test]
            fn olmo2_hf() {
                check::<B>("olmo2", "hf");
            }
            #[test]
            fn gemma2_litgpt() {
                check::<B>("gemma2", "lit");
            }
            #[test]
            fn gemma2_hf() {
                check::<B>("gemma2", "hf");
            }
            #[test]
            fn phi2_litgpt() {
                check::<B>("phi2", "lit");
            }
            #[test]
            fn phi2_hf() {
                check::<B>("phi2", "hf");
            }
        }
    };
}

parity!(flex, graftlm::backend::Flex, "flex");
parity!(ndarray, graftlm::backend::NdArray, "ndarray");
parity!(cuda, graftlm::backend::Cuda, "cuda");
