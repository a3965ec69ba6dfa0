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
            for e in table(&cfg).unwrap() {
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

/// Every fixture configuration (both layouts, every family).
fn fixture_configs() -> Vec<(String, ModelConfig)> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut v = Vec::new();
    for model in std::fs::read_dir(&root).unwrap() {
        let model = model.unwrap().path();
        for layout in ["hf", "lit"] {
            let d = model.join(layout);
            if d.is_dir() {
                let name = format!("{}/{layout}", model.file_name().unwrap().to_string_lossy());
                v.push((name, ModelConfig::from_dir(&d).unwrap()));
            }
        }
    }
    assert!(v.len() >= 25, "only {} fixture configurations", v.len());
    v
}

/// The layout tag a config reader sets is the one of the name table its architecture picks, so
/// `inspect`'s `layout` and the names read agree.
#[test]
fn readers_tag_the_layout_the_table_reads() {
    for (name, cfg) in fixture_configs() {
        assert_eq!(layouts::of(&cfg).family, cfg.family, "{name}");
    }
}

/// PEFT target matching and the model's linears agree through the table: every HF module of a
/// linear lands in a linear of the right input width, the blocks of each linear's rows are
/// covered exactly once, and a module of another layer count or another architecture does not
/// match.
#[test]
fn hf_modules_cover_every_linear_once() {
    for (name, cfg) in fixture_configs() {
        let lin: std::collections::BTreeMap<String, [usize; 2]> =
            linears(&cfg).into_iter().collect();
        let mut rows: std::collections::BTreeMap<String, Vec<(usize, usize)>> = Default::default();
        for m in hf_modules(&cfg) {
            let targets = hf_targets(&cfg, &m);
            assert!(!targets.is_empty(), "{name}: {m} matches nothing");
            for t in targets {
                assert!(lin.contains_key(&t.linear), "{name}: {m} → {}", t.linear);
                rows.entry(t.linear)
                    .or_default()
                    .push((t.row_offset, t.rows));
            }
        }
        for (l, [out, _]) in &lin {
            let mut blocks = rows.remove(l).unwrap_or_default();
            blocks.sort();
            let mut at = 0;
            for (offset, n) in blocks {
                assert_eq!(offset, at, "{name}: {l} rows from {at}");
                at += n;
            }
            assert_eq!(at, *out, "{name}: {l} rows covered");
        }
        let layers = cfg.n_layer;
        let beyond = hf_modules(&cfg)[0].replacen(".0.", &format!(".{layers}."), 1);
        assert!(hf_targets(&cfg, &beyond).is_empty(), "{name}: {beyond}");
        assert!(hf_targets(&cfg, "model.layers.0.attn.c_attn").is_empty());
    }
}

/// Within a layout no two parts share a stored name, and the internal (LitGPT) table names
/// every part a configuration can ask for.
#[test]
fn layouts_name_each_part_once() {
    for (name, cfg) in fixture_configs() {
        for layout in [layouts::of(&cfg), layouts::hf(&cfg), layouts::export(&cfg)] {
            let mut names: Vec<String> = table_in(&cfg, layout)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|e| match e.source {
                    Source::One(n) | Source::NeoxQkv(n) | Source::Tied(n, _) => vec![n],
                    Source::QkvConcat(ns) => ns.to_vec(),
                    Source::Rows(n, at, _) => vec![format!("{n}@{at}")],
                })
                .collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                n,
                "{name} {:?}: a stored name twice",
                layout.family
            );
        }
        assert!(table_in(&cfg, &LITGPT).is_ok(), "{name}");
    }
}

/// `LinearId`'s spelling of each linear is the internal table's name for its part.
#[test]
fn linear_ids_spell_the_internal_names() {
    use crate::config::LinearId;
    for (id, part) in [
        (LinearId::Qkv(3), Part::Qkv),
        (LinearId::Proj(3), Part::Proj),
        (LinearId::Fc(3), Part::Fc),
        (LinearId::Gate(3), Part::Gate),
        (LinearId::Up(3), Part::Up),
        (LinearId::MlpProj(3), Part::Down),
        (LinearId::Head, Part::Head),
    ] {
        assert_eq!(LITGPT.name(part, 3), Some(id.to_string()), "{id:?}");
    }
}
