//! LoRA adapters from LitGPT and PEFT, at every saved step: separate and merged match the
//! reference libraries, merge→unmerge restores the base, and switching never reloads the base.

mod common;

use std::path::PathBuf;

use common::adapter::{check, fixtures, last_logits, reference};
use common::{assert_close, rel_err};
use graftlm::adapters::{self, StepChoice};
use graftlm::{AdapterSpec, Checkpoint, Error, Mode, ModelBuilder};

type B = graftlm::backend::DefaultCpu;

#[test]
fn litgpt_lora_every_step() {
    let run = fixtures().join("adapters/litgpt-lora-llama");
    let steps = adapters::list_steps(&run).unwrap();
    let names: Vec<Option<u64>> = steps.iter().map(|s| s.step).collect();
    assert_eq!(names, vec![Some(2), Some(4), Some(6), None]);
    for s in steps {
        check(&s.dir);
    }
    check(&fixtures().join("adapters/litgpt-lora-gptneox/final"));
}

#[test]
fn litgpt_merged_final_equals_graftlm_merged() {
    let final_dir = fixtures().join("adapters/litgpt-lora-llama/final");
    let r = reference(&final_dir);
    // LitGPT's own merge_lora output, loaded as a plain checkpoint.
    let litgpt_merged = Checkpoint::open(&final_dir)
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    let ours = ModelBuilder::new()
        .adapter(final_dir.clone().into())
        .mode(Mode::Merged)
        .build::<B>(&Default::default())
        .unwrap();
    let a = last_logits(&litgpt_merged, &r.prompt_ids);
    let b = last_logits(&ours, &r.prompt_ids);
    assert!(
        rel_err(&b, &a) < 1e-5,
        "graftlm merged vs LitGPT merge_lora: {}",
        rel_err(&b, &a)
    );
}

#[test]
fn peft_lora_variants() {
    for name in [
        "peft-llama-qv",
        "peft-llama-rslora",
        "peft-phi2-regex",
        "peft-phi2-layers",
    ] {
        check(&fixtures().join("adapters").join(name));
    }
    let trainer = fixtures().join("adapters/peft-qwen2-trainer");
    let steps = adapters::list_steps(&trainer).unwrap();
    assert_eq!(
        steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        vec![Some(2), Some(4)]
    );
    for s in steps {
        check(&s.dir);
    }
}

#[test]
fn run_directory_step_selection() {
    let run = fixtures().join("adapters/litgpt-lora-llama");
    let latest = adapters::locate(&run, None).unwrap();
    assert!(latest.dir.ends_with("final"));
    let four = adapters::locate(&run, Some(StepChoice::Step(4))).unwrap();
    assert!(four.dir.ends_with("step-000004"));
    assert_eq!(four.step, Some(4));
    let err = adapters::locate(&run, Some(StepChoice::Step(5))).unwrap_err();
    assert!(err.to_string().contains("2, 4, 6, final"), "{err}");
    let trainer = fixtures().join("adapters/peft-qwen2-trainer");
    assert!(adapters::locate(&trainer, None)
        .unwrap()
        .dir
        .ends_with("checkpoint-4"));
}

#[test]
fn switching_adapters_never_reloads_the_base() {
    let run = fixtures().join("adapters/litgpt-lora-llama");
    let steps = adapters::list_steps(&run).unwrap();
    let plan = ModelBuilder::new()
        .adapter(steps[0].dir.clone().into())
        .plan()
        .unwrap();
    let mut model = plan.build::<B>(&Default::default()).unwrap();
    let loads = graftlm::checkpoint::base_load_count();
    assert!(loads >= 1, "the counter sees the initial load");
    let cfg = plan.checkpoint.config.clone();
    // Attach every other step, then switch between them.
    for s in &steps[1..] {
        let a = adapters::read(&adapters::locate(&s.dir, None).unwrap(), &cfg, None).unwrap();
        model.attach(&a, 1.0, Mode::Separate).unwrap();
    }
    assert_eq!(model.grafts().len(), steps.len());
    for (i, s) in steps.iter().enumerate() {
        let name = model.grafts()[i].name.clone();
        model.activate_only(&name).unwrap();
        let r = reference(&s.dir);
        assert_close(
            &format!("switch to {name}"),
            &last_logits(&model, &r.prompt_ids),
            &r.logits_last,
        );
    }
    assert_eq!(
        graftlm::checkpoint::base_load_count(),
        loads,
        "no base reload while switching"
    );
}

#[test]
fn two_adapters_at_once_add_up_and_scales_apply() {
    let dir = fixtures().join("adapters/peft-llama-qv");
    let r = reference(&dir);
    let plan = ModelBuilder::new()
        .adapter(dir.clone().into())
        .plan()
        .unwrap();
    let mut model = plan.build::<B>(&Default::default()).unwrap();
    let base = {
        let m = plan.checkpoint.load::<B>(&Default::default()).unwrap();
        last_logits(&m, &r.prompt_ids)
    };
    let name = model.grafts()[0].name.clone();
    // Scale 0 gives the base, and merged scale changes track separate ones.
    model.set_scale(&name, 0.0).unwrap();
    assert!(rel_err(&last_logits(&model, &r.prompt_ids), &base) < 1e-6);
    model.set_scale(&name, 0.5).unwrap();
    let half = last_logits(&model, &r.prompt_ids);
    model.set_merged(&name, true).unwrap();
    assert!(rel_err(&last_logits(&model, &r.prompt_ids), &half) < 1e-5);
    model.set_scale(&name, 1.0).unwrap();
    assert_close(
        "rescaled while merged",
        &last_logits(&model, &r.prompt_ids),
        &r.logits_last_merged,
    );
    model.unmerge_all().unwrap();

    // The same adapter twice at scale 0.5 each equals once at scale 1.
    let mut again = adapters::read(
        &adapters::locate(&dir, None).unwrap(),
        &plan.checkpoint.config,
        Some("copy"),
    )
    .unwrap();
    again.name = "copy".into();
    model.set_scale(&name, 0.5).unwrap();
    model.attach(&again, 0.5, Mode::Separate).unwrap();
    assert_close(
        "two halves",
        &last_logits(&model, &r.prompt_ids),
        &r.logits_last,
    );
    // Names are unique.
    assert!(model.attach(&again, 1.0, Mode::Separate).is_err());
}

#[test]
fn incompatible_adapters_are_refused_with_names() {
    // A llama adapter on the GPT-NeoX base.
    let err = ModelBuilder::new()
        .base(fixtures().join("models/gptneox/lit"))
        .adapter(
            fixtures()
                .join("adapters/litgpt-lora-llama/step-000002")
                .into(),
        )
        .plan()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnexpectedTensors { .. } | Error::ShapeMismatch { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("lit_model.pth.lora"), "{err}");

    let err = ModelBuilder::new()
        .base(fixtures().join("models/phi2/hf"))
        .adapter(fixtures().join("adapters/peft-llama-qv").into())
        .plan()
        .unwrap_err();
    assert!(
        err.to_string().contains("adapter_model.safetensors"),
        "{err}"
    );

    let err = ModelBuilder::new()
        .adapter(fixtures().join("adapters/peft-llama-dora").into())
        .plan()
        .unwrap_err();
    assert!(err.to_string().contains("use_dora"), "{err}");
}

#[test]
fn failed_attach_leaves_the_model_unchanged() {
    let base = fixtures().join("models/llama/lit");
    let mut model = Checkpoint::open(&base)
        .unwrap()
        .load::<B>(&Default::default())
        .unwrap();
    let r = reference(&fixtures().join("adapters/peft-llama-qv"));
    let before = last_logits(&model, &r.prompt_ids);
    // An adapter read for another base (gptneox) cannot attach here.
    let neox = Checkpoint::open(fixtures().join("models/gptneox/lit")).unwrap();
    let a = adapters::read(
        &adapters::locate(&fixtures().join("adapters/litgpt-lora-gptneox/final"), None).unwrap(),
        &neox.config,
        None,
    )
    .unwrap();
    assert!(model.attach(&a, 1.0, Mode::Merged).is_err());
    assert!(model.grafts().is_empty());
    assert_eq!(last_logits(&model, &r.prompt_ids), before);

    // A hand-built adapter whose factors' data do not match their shapes, or of rank 0, is
    // refused as well (an error, not a panic).
    let good = adapters::read(
        &adapters::locate(&fixtures().join("adapters/peft-llama-qv"), None).unwrap(),
        &Checkpoint::open(&base).unwrap().config,
        Some("hand"),
    )
    .unwrap();
    let mut short = good.clone();
    short.updates.values_mut().next().unwrap().a.data.pop();
    let mut flat = good.clone();
    let u = flat.updates.values_mut().next().unwrap();
    u.b.shape = vec![u.b.data.len()];
    let mut rank0 = good.clone();
    let u = rank0.updates.values_mut().next().unwrap();
    let (inp, out) = (u.a.shape[1], u.b.shape[0]);
    (u.a.shape, u.a.data, u.b.shape, u.b.data) = (vec![0, inp], vec![], vec![out, 0], vec![]);
    for bad in [short, flat, rank0] {
        let err = model.attach(&bad, 1.0, Mode::Separate).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        assert!(model.grafts().is_empty());
    }
    model.attach(&good, 1.0, Mode::Separate).unwrap();
    assert_close(
        "hand-read adapter",
        &last_logits(&model, &r.prompt_ids),
        &r.logits_last,
    );
}

#[test]
fn adapter_spec_syntax() {
    let s: AdapterSpec = "out/lora@0.5".parse().unwrap();
    assert_eq!(s.path, PathBuf::from("out/lora"));
    assert_eq!(s.scale, 0.5);
    let s: AdapterSpec = "dir@with@at".parse().unwrap();
    assert_eq!(s.path, PathBuf::from("dir@with@at"));
    assert_eq!(s.scale, 1.0);
    assert!("x@inf".parse::<AdapterSpec>().is_err());
}

#[test]
fn cat_combination_is_the_weighted_sum() {
    let run = fixtures().join("adapters/litgpt-lora-llama");
    let plan = ModelBuilder::new()
        .adapter(run.join("step-000002").into())
        .plan()
        .unwrap();
    let cfg = plan.checkpoint.config.clone();
    let a2 = plan.adapters[0].0.clone();
    let a6 = adapters::read(
        &adapters::locate(&run.join("step-000006"), None).unwrap(),
        &cfg,
        None,
    )
    .unwrap();
    let mut model = plan.build::<B>(&Default::default()).unwrap();
    let r = reference(&run.join("step-000002"));
    // Both attached at 0.3 / 0.7 ...
    model.set_scale(&a2.name, 0.3).unwrap();
    model.attach(&a6, 0.7, Mode::Separate).unwrap();
    let both = last_logits(&model, &r.prompt_ids);
    // ... equals one `cat` adapter at scale 1.
    let combo =
        adapters::combine(&[(&a2, 0.3), (&a6, 0.7)], adapters::Combine::Cat, "mix").unwrap();
    assert_eq!(combo.r, 8 + 8);
    model.set_active(&a2.name, false).unwrap();
    model.set_active(&a6.name, false).unwrap();
    model.attach(&combo, 1.0, Mode::Merged).unwrap();
    assert!(rel_err(&last_logits(&model, &r.prompt_ids), &both) < 1e-5);
    // `linear` keeps the rank.
    let lin =
        adapters::combine(&[(&a2, 0.5), (&a6, 0.5)], adapters::Combine::Linear, "lin").unwrap();
    assert_eq!(lin.r, 8);
}
