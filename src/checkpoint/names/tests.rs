//! Tests of the name table and of reading parameters through it.

use super::*;
use crate::checkpoint::WeightFiles;

/// A tied checkpoint without a stored head reads the embedding once, and so does a LitGPT
/// file whose head was saved as a view of the embedding's storage (`convert_hf_checkpoint`
/// of a tied model); one with a head of its own (or untied) does not take that shortcut.
#[test]
fn the_head_is_the_embedding_only_when_no_head_of_its_own_is_stored() {
    let dir = |m: &str, layout: &str| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(m)
            .join(layout)
    };
    for (model, layout, want) in [
        ("qwen2", "hf", true),
        ("gemma", "hf", true),
        ("mistral", "hf", false),
        ("phi2", "hf", false),
        ("llama32", "lit", true),
        ("qwen2", "lit", true),
        ("llama", "lit", false),
        ("phi2", "lit", false),
    ] {
        let d = dir(model, layout);
        let cfg = ModelConfig::from_dir(&d).unwrap();
        let files = WeightFiles::open_dir(&d).unwrap();
        assert_eq!(
            head_is_the_embedding(&cfg, &files),
            want,
            "{model} {layout}"
        );
    }
}

/// Every parameter lent in place holds the values and shape the copying reader assembles
/// (one tensor, q/k/v stacked, Phi-3's row slices, GPT-NeoX/Falcon regrouped rows), in
/// every fixture family and layout; the assembled kinds are lent, not read.
#[test]
fn lent_parameters_equal_what_read_entry_assembles() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut lent_kinds = std::collections::BTreeSet::new();
    for model in [
        "llama",
        "llama-bf16",
        "gptneox",
        "phi3",
        "falcon7b",
        "falcon40b",
        "qwen2",
        "phi2",
        "gemma",
        "stablelm",
    ] {
        for layout in ["hf", "lit"] {
            let d = root.join(model).join(layout);
            if !d.is_dir() {
                continue;
            }
            let cfg = ModelConfig::from_dir(&d).unwrap();
            let files = WeightFiles::open_dir(&d).unwrap();
            for e in table(&cfg) {
                let mut seen = None;
                let lent = with_entry_in_place(&cfg, &files, &e, &mut |parts, shape| {
                    let all: Vec<f32> = parts.iter().flat_map(|v| v.to_f32_vec()).collect();
                    seen = Some((all, shape.to_vec()));
                })
                .unwrap();
                if !lent {
                    continue;
                }
                let want = read_entry(&cfg, &files, &e).unwrap();
                let (data, shape) = seen.unwrap();
                assert_eq!(shape, want.shape, "{model}/{layout} {}", e.name);
                assert!(data == want.data, "{model}/{layout} {}", e.name);
                let kind = match e.source {
                    Source::Rows(..) => "rows",
                    Source::NeoxQkv(_) => "neox",
                    Source::QkvConcat(_) => "qkv",
                    _ => "one",
                };
                lent_kinds.insert(format!("{model}/{layout} {kind}"));
            }
        }
    }
    for kind in [
        "gptneox/hf neox",
        "falcon7b/hf neox",
        "falcon40b/hf neox",
        "phi3/hf rows",
        "llama/hf qkv",
        "llama-bf16/hf qkv",
        "llama/lit one",
    ] {
        assert!(lent_kinds.contains(kind), "{kind} not lent: {lent_kinds:?}");
    }
}

#[test]
fn neox_regrouping_moves_rows_per_group() {
    // 2 heads, 2 groups, head size 1: stored [q0, k0, v0, q1, k1, v1].
    let stored = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(
        neox_to_grouped(&stored, 1, 2, 2, 1),
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    // With 2-wide rows the rows move intact.
    let stored: Vec<f32> = (0..12).map(|x| x as f32).collect();
    let got = neox_to_grouped(&stored, 2, 2, 2, 1);
    assert_eq!(got, vec![0., 1., 6., 7., 2., 3., 8., 9., 4., 5., 10., 11.]);
}
