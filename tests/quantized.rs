//! Bases held as GGML Q8_0 / Q4_0 blocks (`WeightDtype::Q8_0`, `Q4_0`): every fixture family
//! loads quantized in both layouts and stays close to f32; burn-flex (block kernels) and
//! ndarray (the dequantized values) compute with the same weights; a LoRA (one row or several)
//! and a LLaMA-Adapter attach separate and merging is refused; a linear whose input is not
//! whole blocks stays f32.

mod common;

use common::{fixtures, reference, rel_err, Cpu};
use graftlm::backend::NdArray;
use graftlm::generate::logits_to_vec;
use graftlm::model::WeightDtype;
use graftlm::{adapters, Checkpoint, Error, Mode, Model};

const FAMILIES: [&str; 15] = [
    "llama",
    "llama-bf16",
    "llama32",
    "mistral",
    "qwen2",
    "qwen3",
    "olmo2",
    "gemma",
    "gemma2",
    "phi2",
    "phi3",
    "stablelm",
    "gptneox",
    "falcon7b",
    "falcon40b",
];

fn logits<B: graftlm::backend::ModelBackend>(m: &Model<B>, ids: &[u32]) -> Vec<f32> {
    common::logits(m, ids, true)
}

/// The base of `ck` held as `dtype` with `ad` attached separate, and the change it makes to the
/// logits of `ids` (every position).
fn attached(
    ck: &Checkpoint,
    ad: &graftlm::Adapter,
    ids: &[u32],
    dtype: WeightDtype,
) -> (Model<Cpu>, Vec<f32>) {
    let mut m = ck.load_as::<Cpu>(&Default::default(), dtype).unwrap();
    let base = logits(&m, ids);
    m.attach(ad, 1.0, Mode::Separate).unwrap();
    let with = logits(&m, ids);
    let d = with.iter().zip(&base).map(|(a, b)| a - b).collect();
    (m, d)
}

/// Every family, both layouts: quantized logits (every position) are finite, near f32's for
/// Q8_0 and further for Q4_0's sixteen levels (these fixtures have random weights, which
/// quantize worse than trained ones: see `the_trained_demo_keeps_its_greedy_tokens_at_q8_0`),
/// and the same whichever layout the checkpoint was stored in (the same blocks).
#[test]
fn every_family_loads_quantized_and_stays_near_f32() {
    for fam in FAMILIES {
        let ids = reference(fam).prompt_ids;
        let mut by_layout: Vec<Vec<f32>> = Vec::new();
        for layout in ["hf", "lit"] {
            let dir = fixtures().join(fam).join(layout);
            if !dir.is_dir() {
                continue;
            }
            let ck = Checkpoint::open(&dir).unwrap();
            let f32 = ck
                .load_as::<Cpu>(&Default::default(), WeightDtype::F32)
                .unwrap();
            let f32s = logits(&f32, &ids);
            let mut errs = Vec::new();
            for dtype in [WeightDtype::Q8_0, WeightDtype::Q4_0] {
                let m = ck.load_as::<Cpu>(&Default::default(), dtype).unwrap();
                assert_eq!(m.weight_dtype(), dtype, "{fam}/{layout}");
                let q = logits(&m, &ids);
                assert!(q.iter().all(|v| v.is_finite()), "{fam}/{layout} {dtype}");
                errs.push(rel_err(&q, &f32s));
                if dtype == WeightDtype::Q8_0 {
                    by_layout.push(q);
                }
            }
            let [q8, q4] = errs[..] else { unreachable!() };
            assert!(
                q8 < 0.1 && q8 < q4 && q4 < 2.0,
                "{fam}/{layout}: errors {q8} (q8_0), {q4} (q4_0)"
            );
        }
        if let [hf, lit] = &by_layout[..] {
            let e = rel_err(lit, hf);
            assert!(
                e < 1e-5,
                "{fam}: q8_0 in LitGPT and HF layouts differ by {e}"
            );
        }
    }
}

/// The trained demo model keeps its greedy tokens at Q8_0 in most prompts (eight tokens from
/// each of five; a near tie may go the other way) and its logits within 2% of the largest: on
/// trained weights 8-bit blocks change little.
#[test]
fn the_trained_demo_keeps_its_greedy_tokens_at_q8_0() {
    let ck = Checkpoint::open(common::repo().join("examples/demo/model")).unwrap();
    let tok = graftlm::Tokenizer::from_dir(&ck.dir).unwrap();
    let f32 = ck
        .load_as::<Cpu>(&Default::default(), WeightDtype::F32)
        .unwrap();
    let q8 = ck
        .load_as::<Cpu>(&Default::default(), WeightDtype::Q8_0)
        .unwrap();
    let prompts = [
        "The cat sat on the",
        "def main():",
        "Once upon a time",
        "import numpy as",
        "The results show that",
    ];
    let mut same = 0;
    for p in prompts {
        let ids = tok.encode(p).unwrap();
        let e = rel_err(&logits(&q8, &ids), &logits(&f32, &ids));
        assert!(e < 0.02, "demo q8_0, {p:?}: relative error {e}");
        if common::greedy(&q8, &tok, &ids, 8) == common::greedy(&f32, &tok, &ids, 8) {
            same += 1;
        }
    }
    assert!(
        same >= 4,
        "q8_0 kept f32's greedy tokens in {same} of 5 prompts"
    );
}

/// The block kernels (flex) and the dequantized values (ndarray) are the same weights: the
/// logits agree as closely as f32 backends do, and the held weights are equal.
#[test]
fn block_kernels_and_dequantized_values_agree() {
    for fam in ["llama", "qwen2", "phi2", "gptneox", "gemma2"] {
        let ids = reference(fam).prompt_ids;
        let ck = Checkpoint::open(fixtures().join(fam).join("hf")).unwrap();
        for dtype in [WeightDtype::Q8_0, WeightDtype::Q4_0] {
            let flex = ck.load_as::<Cpu>(&Default::default(), dtype).unwrap();
            let nd = ck.load_as::<NdArray>(&Default::default(), dtype).unwrap();
            let e = rel_err(&logits(&flex, &ids), &logits(&nd, &ids));
            assert!(e < 1e-4, "{fam} {dtype}: relative error {e}");
            let name = "transformer.h.0.attn.qkv";
            let (a, b) = (held(&flex, name), held(&nd, name));
            assert_eq!(a, b, "{fam} {dtype}: held weights");
        }
    }
}

/// The weight of linear `name` of `m` as f32 values (dequantized when held as blocks).
fn held<B: graftlm::backend::ModelBackend>(m: &Model<B>, name: &str) -> Vec<f32> {
    let w = m.linear(name).unwrap().weight_f32();
    w.into_data().to_vec().unwrap()
}

/// A LoRA on a quantized base: separate, its change to the logits is the one it makes on the
/// f32 base (up to the base's quantization); rows of a batch each with or without it equal the
/// same sequences alone; merging is refused and changes nothing.
#[test]
fn lora_attaches_separate_and_merging_is_refused() {
    let ck = Checkpoint::open(fixtures().join("qwen2/hf")).unwrap();
    let lora = common::repo().join("tests/fixtures/adapters/families/qwen2-peft");
    let ad = adapters::load(&lora, None, &ck.config, Some("a")).unwrap();
    let ids = reference("qwen2").prompt_ids;
    let (_, want) = attached(&ck, &ad, &ids, WeightDtype::F32);
    let (mut m, got) = attached(&ck, &ad, &ids, WeightDtype::Q8_0);
    let e = rel_err(&got, &want);
    assert!(e < 0.1, "LoRA's change on q8_0: relative error {e}");
    assert!(
        want.iter().any(|d| d.abs() > 1e-3),
        "the adapter changes the logits"
    );

    let before = logits(&m, &ids);
    match m.set_merged("a", true) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("q8_0"), "{msg}"),
        other => panic!("merge into q8_0: {other:?}"),
    }
    assert!(!m.grafts()[0].merged);
    assert_eq!(logits(&m, &ids), before, "a refused merge changes nothing");
    let mut fresh = ck
        .load_as::<Cpu>(&Default::default(), WeightDtype::Q4_0)
        .unwrap();
    assert!(matches!(
        fresh.attach(&ad, 1.0, Mode::Merged),
        Err(Error::Unsupported(_))
    ));
    assert!(fresh.grafts().is_empty());

    // Two sequences in one batch, one with the adapter: each row equals its sequence alone.
    let cap = ids.len() + 2;
    let mut caches = vec![m.new_cache(cap), m.new_cache(cap)];
    let choice = [Some("a"), None];
    for (c, ch) in caches.iter_mut().zip(choice) {
        m.forward_with(&ids, c, true, ch).unwrap();
    }
    let batch = logits_to_vec(m.forward_batch(&[5, 9], &mut caches, &choice).unwrap()).unwrap();
    let v = batch.len() / 2;
    for (i, (tok, ch)) in [(5u32, Some("a")), (9, None)].into_iter().enumerate() {
        let mut c = m.new_cache(cap);
        m.forward_with(&ids, &mut c, true, ch).unwrap();
        let alone = logits_to_vec(m.forward_with(&[tok], &mut c, true, ch).unwrap()).unwrap();
        let e = rel_err(&batch[i * v..(i + 1) * v], &alone);
        assert!(e < 1e-5, "row {i}: relative error {e}");
    }
}

/// A linear whose input width is not a whole number of 32-weight blocks is held f32 (exact),
/// the others quantized; the model runs and reports its dtype.
#[test]
fn inputs_not_whole_blocks_stay_f32() {
    use graftlm::checkpoint::{names, HostTensor};
    let mut cfg = Checkpoint::open(fixtures().join("llama/hf"))
        .unwrap()
        .config;
    cfg.n_embd = 48;
    cfg.n_head = 3;
    cfg.n_query_groups = 3;
    cfg.head_size = 16;
    cfg.rope_n_elem = 16;
    cfg.intermediate_size = 96;
    let table = names::table_in(&cfg, &names::LITGPT).unwrap();
    let mut seed = 1u32;
    let mut take = |name: &str| {
        let e = table.iter().find(|e| e.name == name).unwrap().clone();
        let n: usize = e.shape.iter().product();
        let data = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .map(|v| if e.shape.len() == 1 { 1.0 } else { v * 0.2 })
            .collect();
        Ok(HostTensor {
            shape: e.shape,
            data,
        })
    };
    let m = Model::<Cpu>::from_source_as(cfg, &mut take, WeightDtype::Q8_0, &Default::default())
        .unwrap();
    let dtype = |n: &str| m.linear(n).unwrap().precision();
    assert_eq!(
        dtype("transformer.h.0.attn.qkv"),
        WeightDtype::F32,
        "k = 48"
    );
    assert_eq!(
        dtype("transformer.h.0.mlp.fc_1"),
        WeightDtype::F32,
        "k = 48"
    );
    assert_eq!(
        dtype("transformer.h.0.mlp.proj"),
        WeightDtype::Q8_0,
        "k = 96"
    );
    let l = logits(&m, &[1, 2, 3]);
    assert!(l.iter().all(|v| v.is_finite()));
}

/// A LLaMA-Adapter v2 (prefix, norms, affine corrections) on a quantized base, separate: its
/// change to the logits is the one it makes on the f32 base, up to the base's quantization.
#[test]
fn llama_adapter_attaches_to_a_quantized_base() {
    let ck = Checkpoint::open(fixtures().join("llama/lit")).unwrap();
    let dir = common::repo().join("tests/fixtures/adapters/litgpt-adapter-v2-llama/final");
    let ad = adapters::load(&dir, None, &ck.config, None).unwrap();
    let ids = reference("llama").prompt_ids;
    let (_, want) = attached(&ck, &ad, &ids, WeightDtype::F32);
    let (_, got) = attached(&ck, &ad, &ids, WeightDtype::Q8_0);
    assert!(
        want.iter().any(|d| d.abs() > 1e-3),
        "the adapter changes the logits"
    );
    let e = rel_err(&got, &want);
    assert!(
        e < 0.1,
        "LLaMA-Adapter's change on q8_0: relative error {e}"
    );
}
