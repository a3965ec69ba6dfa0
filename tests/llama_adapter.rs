//! LitGPT LLaMA-Adapter v1 and v2 at every saved step: logits and greedy tokens match LitGPT's
//! adapter models (with and without KV cache), separate and merged; detaching restores the base.

mod common;

use std::path::{Path, PathBuf};

use common::{again, assert_close_on, greedy, logits, rel_err, tolerance};
use graftlm::adapters;
use graftlm::generate::logits_to_vec;
use graftlm::{Error, Mode, ModelBuilder, Tokenizer};
use serde::Deserialize;

type B = graftlm::backend::DefaultCpu;

#[derive(Debug, Deserialize)]
struct Ref {
    prompt_ids: Vec<u32>,
    logits_last: Vec<f32>,
    greedy_new_ids: Vec<u32>,
    max_new_tokens: usize,
    adapter_prompt_length: usize,
    adapter_start_layer: usize,
    #[serde(default)]
    seq_logits: Vec<Vec<f32>>,
}

fn fixtures() -> PathBuf {
    common::repo().join("tests/fixtures")
}

fn check(dir: &Path) {
    check_on::<B>(dir)
}

fn check_on<B: graftlm::backend::ModelBackend>(dir: &Path) {
    let what = dir.display().to_string();
    let r: Ref =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let plan = ModelBuilder::new()
        .adapter(dir.into())
        .plan()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let a = &plan.adapters[0].0;
    assert_eq!(a.llama.prompt_length, r.adapter_prompt_length, "{what}");
    assert_eq!(a.llama.start_layer, r.adapter_start_layer, "{what}");
    let tok = Tokenizer::from_dir(&plan.checkpoint.dir).unwrap();
    let base = logits(
        &plan.checkpoint.load::<B>(&Default::default()).unwrap(),
        &r.prompt_ids,
        false,
    );
    let mut model = plan.build::<B>(&Default::default()).unwrap();

    assert_close_on::<B>(
        &format!("{what} separate"),
        &logits(&model, &r.prompt_ids, false),
        &r.logits_last,
    );
    if !r.seq_logits.is_empty() {
        let vocab = r.seq_logits[0].len();
        let all = logits(&model, &r.prompt_ids, true);
        let width = all.len() / r.prompt_ids.len();
        let mut cache = model.new_cache(r.prompt_ids.len());
        for (i, want) in r.seq_logits.iter().enumerate() {
            assert_close_on::<B>(
                &format!("{what} prefill row {i}"),
                &all[i * width..i * width + vocab],
                want,
            );
            let step = logits_to_vec(
                model
                    .forward(&r.prompt_ids[i..=i], &mut cache, true)
                    .unwrap(),
            )
            .unwrap();
            assert_close_on::<B>(&format!("{what} cached step {i}"), &step, want);
        }
    }
    assert_eq!(
        greedy(&model, &tok, &r.prompt_ids, r.max_new_tokens),
        r.greedy_new_ids,
        "{what}: greedy"
    );

    let name = model.grafts()[0].name.clone();
    model.set_merged(&name, true).unwrap();
    assert_close_on::<B>(
        &format!("{what} merged"),
        &logits(&model, &r.prompt_ids, false),
        &r.logits_last,
    );
    assert_eq!(
        greedy(&model, &tok, &r.prompt_ids, r.max_new_tokens),
        r.greedy_new_ids,
        "{what}: greedy merged"
    );
    model.set_merged(&name, false).unwrap();

    model.set_active(&name, false).unwrap();
    assert!(
        rel_err(&logits(&model, &r.prompt_ids, false), &base) < again::<B>(1e-6),
        "{what}: inactive is the base"
    );
    model.set_active(&name, true).unwrap();
    assert_close_on::<B>(
        &format!("{what} reactivated"),
        &logits(&model, &r.prompt_ids, false),
        &r.logits_last,
    );
    model.set_merged(&name, true).unwrap();
    model.detach(&name).unwrap();
    let detached = logits(&model, &r.prompt_ids, false);
    if tolerance::<B>() <= 1e-4 {
        assert_eq!(detached, base, "{what}: detach restores the base exactly");
    } else {
        assert!(
            rel_err(&detached, &base) < again::<B>(1e-6),
            "{what}: detach restores the base"
        );
    }
}

#[test]
fn llama_adapter_v1_every_step() {
    let run = fixtures().join("adapters/litgpt-adapter-llama");
    let steps = adapters::list_steps(&run).unwrap();
    assert_eq!(steps.len(), 3);
    for s in steps {
        check(&s.dir);
    }
}

#[test]
fn llama_adapter_v2_every_step() {
    for run in [
        "adapters/litgpt-adapter-v2-llama",
        "adapters/litgpt-adapter-v2-gptneox",
    ] {
        for s in adapters::list_steps(&fixtures().join(run)).unwrap() {
            check(&s.dir);
        }
    }
}

/// LLaMA-Adapter v1 and v2 on every architecture family (LitGPT layout), separate and merged
/// (fixtures: `tests/fixtures/make_family_adapters.py`).
#[test]
fn llama_adapter_on_every_family() {
    for arch in common::adapter::FAMILIES {
        for kind in ["adapter", "adapter-v2"] {
            check(&fixtures().join(format!("adapters/families/{arch}-{kind}")));
        }
    }
}

/// The same on the GPU (`cargo test --features cuda`, `benches/cuda.sh`).
#[cfg(feature = "cuda")]
#[test]
fn cuda_llama_adapter_on_every_family() {
    for arch in common::adapter::FAMILIES {
        for kind in ["adapter", "adapter-v2"] {
            check_on::<graftlm::backend::Cuda>(
                &fixtures().join(format!("adapters/families/{arch}-{kind}")),
            );
        }
    }
}

#[test]
fn llama_adapter_and_lora_do_not_mix() {
    let plan = ModelBuilder::new()
        .adapter(
            fixtures()
                .join("adapters/litgpt-adapter-llama/final")
                .into(),
        )
        .plan()
        .unwrap();
    let mut model = plan.build::<B>(&Default::default()).unwrap();
    let lora = adapters::load(
        &fixtures().join("adapters/litgpt-lora-llama/final"),
        None,
        &plan.checkpoint.config,
        None,
    )
    .unwrap();
    let err = model.attach(&lora, 1.0, Mode::Separate).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(model
        .set_scale(&model.grafts()[0].name.clone(), 0.5)
        .is_err());
    // A v2 adapter for a Llama base on a GPT-NeoX base is refused by name.
    let err = ModelBuilder::new()
        .base(fixtures().join("models/gptneox/lit"))
        .adapter(
            fixtures()
                .join("adapters/litgpt-adapter-v2-llama/final")
                .into(),
        )
        .build::<B>(&Default::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("lit_model.pth.adapter_v2"),
        "{err}"
    );
}

/// A LLaMA-Adapter whose parts do not fit the model (a caller can build one: `Adapter`'s fields
/// are public) is refused before anything changes: the model's logits stay the base's.
#[test]
fn misfit_llama_adapter_parts_change_nothing() {
    let base = fixtures().join("models/llama/lit");
    let plan = ModelBuilder::new().base(base).plan().unwrap();
    let mut model = plan.build::<B>(&Default::default()).unwrap();
    let cfg = plan.checkpoint.config.clone();
    let good = adapters::load(
        &fixtures().join("adapters/litgpt-adapter-v2-llama/final"),
        None,
        &cfg,
        None,
    )
    .unwrap();
    let ids = [1u32, 5, 9, 3];
    let before = logits(&model, &ids, false);
    let mut cases: Vec<(&str, graftlm::Adapter)> = Vec::new();
    let mut a = good.clone();
    let (_, gate) = a.llama.prefix.values_mut().next().unwrap();
    gate.pop();
    cases.push(("gating_factor", a));
    let mut a = good.clone();
    let (layer, part) = a.llama.prefix.pop_last().unwrap();
    a.llama.prefix.insert(layer + cfg.n_layer, part);
    cases.push(("layer", a));
    let mut a = good.clone();
    let (wte, _) = a.llama.prefix.values_mut().next().unwrap();
    wte.data.pop();
    cases.push(("adapter_wte", a));
    let mut a = good.clone();
    let (_, (_, bias)) = a.llama.affine.iter_mut().next().unwrap();
    bias.push(0.0);
    cases.push(("adapter_bias", a));
    for (what, bad) in cases {
        for mode in [Mode::Separate, Mode::Merged] {
            let err = model.attach(&bad, 1.0, mode).unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert!(model.grafts().is_empty(), "{what}");
            assert_eq!(logits(&model, &ids, false), before, "{what} {mode:?}");
        }
    }
    model.attach(&good, 1.0, Mode::Separate).unwrap();
    assert_ne!(logits(&model, &ids, false), before);
}
