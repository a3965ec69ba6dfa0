//! Weight matrices held in 16 bits (`WeightDtype`): exact for 16-bit checkpoints, a plain
//! rounding for f32 ones, merge/unmerge restoring the held base exactly.

mod common;

use std::path::Path;

use common::{fixtures, greedy, logits, reference, rel_err};
use graftlm::backend::Flex;
use graftlm::model::WeightDtype;
use graftlm::{Checkpoint, Model, ModelBuilder, Tokenizer};
use safetensors::{Dtype, SafeTensors};

/// A copy of checkpoint `src` with the f32 tensors of its safetensors files (every one, or only
/// the matrices) stored as `dtype`, rounded to nearest even as PyTorch's `.to(torch.bfloat16)`.
fn convert(src: &Path, dtype: Dtype, matrices_only: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
                .tensors()
                .into_iter()
                .map(|(n, v)| {
                    assert_eq!(v.dtype(), Dtype::F32, "{n}: fixture stored as f32");
                    if matrices_only && v.shape().len() != 2 {
                        return (n, Dtype::F32, v.shape().to_vec(), v.data().to_vec());
                    }
                    let data: Vec<u8> = v
                        .data()
                        .chunks_exact(4)
                        .flat_map(|c| {
                            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                            match dtype {
                                Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes(),
                                _ => half::f16::from_f32(x).to_le_bytes(),
                            }
                        })
                        .collect();
                    (n, dtype, v.shape().to_vec(), data)
                })
                .collect();
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
                .iter()
                .map(|(n, d, s, b)| {
                    let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
                    (n.clone(), v)
                })
                .collect();
            safetensors::serialize_to_file(views, None, &dir.path().join(&name)).unwrap();
        } else {
            std::fs::copy(&p, dir.path().join(&name)).unwrap();
        }
    }
    dir
}

/// Bit-for-bit equality, reporting the first difference (not thousands of values).
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: first difference at {i}: {} vs {}", got[i], want[i]);
    }
}

fn load(dir: &Path, precision: WeightDtype) -> Model<Flex> {
    Checkpoint::open(dir)
        .unwrap()
        .load_as::<Flex>(&Default::default(), precision)
        .unwrap()
}

#[test]
fn a_16_bit_checkpoint_held_as_stored_computes_exactly_as_in_f32() {
    for (name, dtype, held) in [
        ("llama", Dtype::BF16, WeightDtype::Bf16),
        ("qwen2", Dtype::BF16, WeightDtype::Bf16), // tied embedding
        ("gemma2", Dtype::BF16, WeightDtype::Bf16),
        ("phi2", Dtype::F16, WeightDtype::F16), // biases, partial rotary
    ] {
        let dir = convert(&fixtures().join(name).join("hf"), dtype, false);
        let auto = load(dir.path(), WeightDtype::Auto);
        let wide = load(dir.path(), WeightDtype::F32);
        assert_eq!(
            auto.weight_dtype(),
            held,
            "{name}: Auto keeps the stored dtype"
        );
        assert_eq!(wide.weight_dtype(), WeightDtype::F32);
        assert_eq!(
            2 * auto.weight_bytes(),
            wide.weight_bytes(),
            "{name}: held in 16 bits"
        );
        let r = reference(name);
        // Every position (the many-row kernel), then token by token (the one-row kernel).
        assert_same(
            &format!("{name}: prefill logits held as {held} vs f32"),
            &logits(&auto, &r.prompt_ids, true),
            &logits(&wide, &r.prompt_ids, true),
        );
        let tok = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(
            greedy(&auto, &tok, &r.prompt_ids, 8),
            greedy(&wide, &tok, &r.prompt_ids, 8),
            "{name}: greedy tokens held as {held} vs f32"
        );
    }
}

#[test]
fn holding_an_f32_checkpoint_in_16_bits_rounds_its_weights_and_nothing_else() {
    for (name, dtype, held) in [
        ("qwen2", Dtype::BF16, WeightDtype::Bf16),
        ("llama", Dtype::F16, WeightDtype::F16),
    ] {
        let src = fixtures().join(name).join("hf");
        let forced = load(&src, held);
        let rounded_copy = convert(&src, dtype, true);
        let copy = load(rounded_copy.path(), WeightDtype::Auto);
        let f32_model = load(&src, WeightDtype::Auto);
        assert_eq!(
            f32_model.weight_dtype(),
            WeightDtype::F32,
            "{name}: Auto never rounds"
        );
        assert_eq!(forced.weight_dtype(), held);
        // Half the bytes — and a tied embedding (qwen2) still served by the rounded head.
        assert_eq!(
            2 * forced.weight_bytes(),
            f32_model.weight_bytes(),
            "{name}"
        );
        let ids = reference(name).prompt_ids;
        let got = logits(&forced, &ids, true);
        assert_same(
            &format!("{name}: = the {held} file"),
            &got,
            &logits(&copy, &ids, true),
        );
        let e = rel_err(&got, &logits(&f32_model, &ids, true));
        assert!(
            e > 0.0 && e < 3e-2,
            "{name}: {held} vs f32 relative error {e:e}"
        );
    }
}

#[cfg(feature = "ndarray")]
#[test]
fn backends_without_16_bit_weights_compute_with_the_same_rounded_values() {
    use graftlm::backend::NdArray;
    let src = fixtures().join("llama32").join("hf");
    let ck = Checkpoint::open(&src).unwrap();
    let nd = ck
        .load_as::<NdArray>(&Default::default(), WeightDtype::Bf16)
        .unwrap();
    assert_eq!(nd.weight_dtype(), WeightDtype::Bf16);
    let f32_bytes = Checkpoint::open(&src)
        .unwrap()
        .load::<NdArray>(&Default::default())
        .unwrap()
        .weight_bytes();
    assert_eq!(nd.weight_bytes(), f32_bytes, "held as rounded f32");
    let flex = load(&src, WeightDtype::Bf16);
    let ids = reference("llama32").prompt_ids;
    common::assert_close(
        "ndarray bf16 vs flex bf16",
        &logits(&nd, &ids, true),
        &logits(&flex, &ids, true),
    );
    // Auto never rounds, and ndarray holds f32.
    let auto = Checkpoint::open(convert(&src, Dtype::BF16, false).path())
        .unwrap()
        .load::<NdArray>(&Default::default())
        .unwrap();
    assert_eq!(auto.weight_dtype(), WeightDtype::F32);
}

#[test]
fn lora_merged_into_16_bit_weights_rounds_and_unmerging_restores_the_base_exactly() {
    let base = fixtures().join("qwen2/hf");
    let adapter = common::repo().join("tests/fixtures/adapters/families/qwen2-peft");
    let ids = reference("qwen2").prompt_ids;
    let mut model = ModelBuilder::new()
        .base(&base)
        .adapter(adapter.into())
        .weight_dtype(WeightDtype::Bf16)
        .build::<Flex>(&Default::default())
        .unwrap();
    let name = model.grafts()[0].name.clone();
    let separate = logits(&model, &ids, false);
    model.set_active(&name, false).unwrap();
    let plain = logits(&model, &ids, false);
    model.set_active(&name, true).unwrap();
    assert!(
        rel_err(&separate, &plain) > 1e-3,
        "the adapter changes the output"
    );

    model.set_merged(&name, true).unwrap();
    assert_eq!(
        model.weight_dtype(),
        WeightDtype::Bf16,
        "merged stays 16-bit"
    );
    let held = |m: &Model<Flex>| m.weight_bytes();
    assert_eq!(
        held(&model),
        held(&load(&base, WeightDtype::Bf16)),
        "merged weights are 16-bit"
    );
    let merged = logits(&model, &ids, false);
    let e = rel_err(&merged, &separate);
    assert!(e < 2e-2, "merged vs separate: {e:e}");
    model.set_scale(&name, 0.5).unwrap();
    let half_scale = logits(&model, &ids, false);
    assert!(
        rel_err(&half_scale, &merged) > 1e-3,
        "rescaling a merged adapter"
    );

    model.set_merged(&name, false).unwrap();
    model.set_scale(&name, 1.0).unwrap();
    assert_same(
        "unmerged = separate",
        &logits(&model, &ids, false),
        &separate,
    );
    model.detach(&name).unwrap();
    assert_same("detached = the base", &logits(&model, &ids, false), &plain);
}

#[test]
fn llama_adapter_v2_merged_into_16_bit_weights_unmerges_exactly() {
    let dir = common::repo().join("tests/fixtures/adapters/families/qwen2-adapter-v2");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(r["logits_last"].clone()).unwrap();
    let mut model = ModelBuilder::new()
        .adapter(dir.into())
        .weight_dtype(WeightDtype::Bf16)
        .build::<Flex>(&Default::default())
        .unwrap();
    let name = model.grafts()[0].name.clone();
    let separate = logits(&model, &ids, false);
    let e = rel_err(&separate, &want);
    assert!(e < 3e-2, "bf16 weights vs the f32 reference: {e:e}");
    model.set_merged(&name, true).unwrap();
    let e = rel_err(&logits(&model, &ids, false), &separate);
    assert!(e < 2e-2, "merged vs separate: {e:e}");
    model.set_merged(&name, false).unwrap();
    assert_same(
        "unmerged = separate",
        &logits(&model, &ids, false),
        &separate,
    );
}

#[test]
fn with_auto_merging_into_a_16_bit_checkpoint_is_exact() {
    // A bf16 checkpoint held as stored (auto) merges in f32: the same logits as held in f32.
    let copy = convert(&fixtures().join("qwen2/hf"), Dtype::BF16, false);
    let adapter = common::repo().join("tests/fixtures/adapters/families/qwen2-peft");
    let ids = reference("qwen2").prompt_ids;
    let build = |p: WeightDtype| {
        let mut m = ModelBuilder::new()
            .base(copy.path())
            .adapter(adapter.clone().into())
            .weight_dtype(p)
            .build::<Flex>(&Default::default())
            .unwrap();
        let name = m.grafts()[0].name.clone();
        m.set_merged(&name, true).unwrap();
        m
    };
    let (auto, wide) = (build(WeightDtype::Auto), build(WeightDtype::F32));
    assert_eq!(auto.weight_dtype(), WeightDtype::Bf16);
    assert_same(
        "auto merged vs f32 merged",
        &logits(&auto, &ids, false),
        &logits(&wide, &ids, false),
    );
}

#[test]
fn separate_lora_on_16_bit_weights_is_held_in_16_bits_when_asked_or_when_exact() {
    use burn::tensor::DType;
    use graftlm::backend::NdArray;
    let base = fixtures().join("qwen2/hf");
    let adapter = common::repo().join("tests/fixtures/adapters/families/qwen2-peft");
    let ids = reference("qwen2").prompt_ids;
    fn build<B: graftlm::backend::ModelBackend>(
        base: &Path,
        adapter: &Path,
        p: WeightDtype,
    ) -> Model<B> {
        ModelBuilder::new()
            .base(base)
            .adapter(adapter.to_path_buf().into())
            .weight_dtype(p)
            .build::<B>(&Default::default())
            .unwrap()
    }
    // The dtypes `A` and `B` of every separately kept update are held in.
    fn dtypes<B: graftlm::backend::ModelBackend>(m: &Model<B>) -> Vec<(DType, DType)> {
        let g = &m.grafts()[0];
        assert!(!g.linears.is_empty());
        g.linears
            .iter()
            .map(|l| {
                let u = m.linear(l).unwrap().low_rank().next().unwrap();
                (u.a.dtype(), u.b.dtype())
            })
            .collect()
    }
    let all = |m: &[(DType, DType)], d: DType| m.iter().all(|&(a, b)| a == d && b == d);

    // 16 bits asked for an f32 checkpoint: the adapter is rounded like the weights, on every
    // backend (ndarray holds the same rounded values in f32).
    let flex = build::<Flex>(&base, &adapter, WeightDtype::Bf16);
    assert!(all(&dtypes(&flex), DType::BF16));
    let nd = build::<NdArray>(&base, &adapter, WeightDtype::Bf16);
    assert!(all(&dtypes(&nd), DType::F32));
    common::assert_close(
        "ndarray bf16 vs flex bf16, LoRA separate",
        &logits(&nd, &ids, false),
        &logits(&flex, &ids, false),
    );
    let wide = build::<Flex>(&base, &adapter, WeightDtype::F32);
    let e = rel_err(&logits(&flex, &ids, false), &logits(&wide, &ids, false));
    assert!(e > 0.0 && e < 3e-2, "bf16 vs f32, LoRA separate: {e:e}");

    // A bf16 checkpoint held as stored (auto) never changes results: an f32 adapter stays f32,
    // an adapter whose values are bf16 (scale 2 folded in) is held in 16 bits, and both give
    // the f32 model's logits bit for bit.
    let copy = convert(&base, Dtype::BF16, false);
    let auto = build::<Flex>(copy.path(), &adapter, WeightDtype::Auto);
    assert_eq!(auto.weight_dtype(), WeightDtype::Bf16);
    assert!(all(&dtypes(&auto), DType::F32));
    let wide = build::<Flex>(copy.path(), &adapter, WeightDtype::F32);
    assert_same(
        "auto vs f32, f32 adapter",
        &logits(&auto, &ids, false),
        &logits(&wide, &ids, false),
    );
    let adapter16 = convert(&adapter, Dtype::BF16, false);
    let auto = build::<Flex>(copy.path(), adapter16.path(), WeightDtype::Auto);
    assert!(all(&dtypes(&auto), DType::BF16));
    let wide = build::<Flex>(copy.path(), adapter16.path(), WeightDtype::F32);
    assert_same(
        "auto vs f32, bf16 adapter",
        &logits(&auto, &ids, false),
        &logits(&wide, &ids, false),
    );
}
