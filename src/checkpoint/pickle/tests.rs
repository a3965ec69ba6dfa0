//! Tests of the pickle subset, including the hostile shapes its bounds exist for: each of those
//! must fail (or succeed) within a second, without deep recursion or large allocations.

use super::value::{MIN_WORK, WORK_PER_BYTE};
use super::*;
use std::time::{Duration, Instant};

/// Enough nesting to overflow any thread's stack if something recursed on it.
const DEEP: usize = 100_000;

/// `BINUNICODE text`.
fn s(text: &str) -> Vec<u8> {
    let mut p = vec![b'X'];
    p.extend((text.len() as u32).to_le_bytes());
    p.extend(text.as_bytes());
    p
}

/// `_rebuild_tensor_v2(("storage", FloatStorage, key, "cpu", 6), 0, (2, 3), (3, 1), False,
/// OrderedDict())`, leaving the tensor on the stack.
fn tensor(key: &str) -> Vec<u8> {
    [
        &b"ctorch._utils\n_rebuild_tensor_v2\n(("[..],
        &s("storage"),
        b"ctorch\nFloatStorage\n",
        &s(key),
        &s("cpu"),
        b"K\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR",
    ]
    .concat()
}

/// `head`, then `body` `n` times, then `tail`.
fn build(head: &[u8], body: &[u8], n: usize, tail: &[u8]) -> Vec<u8> {
    [head, &body.repeat(n), tail].concat()
}

/// Parses `p`, which must take well under a second even in a debug build.
fn parse(p: &[u8]) -> Result<Vec<(String, TensorRef)>, String> {
    let start = Instant::now();
    let r = tensors(p);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{} bytes took {took:?}",
        p.len()
    );
    r
}

fn assert_err(p: &[u8], want: &str) {
    match parse(p) {
        Err(e) => assert!(e.contains(want), "error {e:?} does not contain {want:?}"),
        Ok(t) => panic!("parsed into {} tensors, expected an error", t.len()),
    }
}

const TOO_DEEP: &str = "pickle containers nested more than 256 deep";
const TOO_MUCH: &str = "pickle needs more work than its size allows";

#[test]
fn rejects_garbage_without_panicking() {
    for bytes in [
        &b""[..],
        b"\x80",
        b"\x80\x02}q\x00(",
        b"\xff\xff",
        b"Q",
        b"(t.",
        b"R.",
        b"(.",
        b"(\x85.",
        b"](a.",
    ] {
        assert!(tensors(bytes).is_err() || tensors(bytes).unwrap().is_empty());
    }
}

#[test]
fn parses_a_tiny_state_dict() {
    // {"w": _rebuild_tensor_v2(("storage", FloatStorage, "0", "cpu", 6), 0, (2, 3), (3, 1), False, OrderedDict())}
    let mut p = vec![0x80, 2, b'}', b'X'];
    p.extend(1u32.to_le_bytes());
    p.push(b'w');
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.extend(b"(X");
    p.extend(7u32.to_le_bytes());
    p.extend(b"storagectorch\nFloatStorage\nX");
    p.extend(1u32.to_le_bytes());
    p.extend(b"0X");
    p.extend(3u32.to_le_bytes());
    p.extend(b"cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.");
    let t = tensors(&p).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, "w");
    assert_eq!(t[0].1.shape, vec![2, 3]);
    assert_eq!(t[0].1.stride, vec![3, 1]);
    assert_eq!(t[0].1.storage_type, "FloatStorage");
}

/// Tied weights: torch memoizes the tensor once and refers to it again under the second key.
#[test]
fn a_shared_tensor_is_listed_under_each_key() {
    let p = [
        &b"}("[..],
        &s("wte"),
        &tensor("0"),
        b"q\x01",
        &s("lm_head"),
        b"h\x01u.",
    ]
    .concat();
    let t = parse(&p).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].0.as_str(), t[1].0.as_str()), ("wte", "lm_head"));
    assert_eq!(t[0].1, t[1].1);
    assert_eq!(t[0].1.key, "0");
}

/// The memo keeps a snapshot: adding to a container after memoizing it does not change the
/// memoized value (copy-on-write), although values are shared.
#[test]
fn a_memoized_container_keeps_its_snapshot() {
    let filled = [&b"}q\x00"[..], &s("w"), &tensor("0"), b"s"].concat();
    assert_eq!(parse(&[&filled[..], b"."].concat()).unwrap().len(), 1);
    assert!(parse(&[&filled[..], b"h\x00."].concat())
        .unwrap()
        .is_empty());
    let list = build(b"]q\x00", b"h\x00K\x01a", 3, b"h\x00.");
    assert!(parse(&list).unwrap().is_empty());
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    let nested = |n: usize| {
        let open = [&b"}"[..], &s("a")].concat();
        build(&build(b"", &open, n, &tensor("0")), b"s", n, b".")
    };
    let t = parse(&nested(256)).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].0, vec!["a"; 256].join("."));
    assert_err(&nested(257), TOO_DEEP);
}

#[test]
fn deep_lists_are_rejected() {
    // Nested by APPEND and by APPENDS.
    assert_err(&build(&b"]".repeat(DEEP), b"a", DEEP, b"."), TOO_DEEP);
    assert_err(&build(&b"](".repeat(DEEP), b"e", DEEP, b"."), TOO_DEEP);
    // Each new list holds the previous one, fetched from the memo.
    assert_err(&build(b"]q\x00", b"]h\x00aq\x00", DEEP, b"."), TOO_DEEP);
    // A list appended to (a copy of) itself.
    assert_err(&build(b"]q\x00", b"h\x00h\x00aq\x00", DEEP, b"."), TOO_DEEP);
}

#[test]
fn deep_tuples_are_rejected() {
    assert_err(&build(&b"(".repeat(DEEP), b"t", DEEP, b"."), TOO_DEEP);
    assert_err(&build(b")", b"\x85", DEEP, b"."), TOO_DEEP);
    assert_err(&build(b")", b")\x86", DEEP, b"."), TOO_DEEP);
    assert_err(&build(b")", b"))\x87", DEEP, b"."), TOO_DEEP);
    assert_err(&build(b")q\x00", b"h\x00\x85q\x00", DEEP, b"."), TOO_DEEP);
}

#[test]
fn deep_dicts_are_rejected() {
    // Nested as values by SETITEM and SETITEMS, and as keys.
    let values =
        |open: &[u8], close: &[u8]| build(&build(b"}", open, DEEP, b""), close, DEEP, b".");
    assert_err(&values(b"K\x01}", b"s"), TOO_DEEP);
    assert_err(&values(b"(K\x01}", b"u"), TOO_DEEP);
    assert_err(&build(&b"}".repeat(DEEP), b"K\x01s", DEEP, b"."), TOO_DEEP);
    assert_err(
        &build(b"}q\x00", b"}h\x00K\x01sq\x00", DEEP, b"."),
        TOO_DEEP,
    );
}

/// Doubling a list through the memo 40 times describes 2^40 elements; shared, it costs 40 nodes.
#[test]
fn memo_doubling_is_shared_not_copied() {
    let doubled = |n| build(b"]q\x00", b"](h\x00h\x00eq\x00", n, b".");
    assert!(parse(&doubled(40)).unwrap().is_empty());
    assert_err(&doubled(300), TOO_DEEP);
    let tuples = build(b")q\x00", b"h\x00h\x00\x86q\x00", 200, b"h\x00.");
    assert!(parse(&tuples).unwrap().is_empty());
}

/// A 100 KB string fetched 50,000 times is shared; listed as 1,000 dotted paths it would be 100 MB.
#[test]
fn a_big_string_is_shared_but_its_paths_are_charged() {
    let big = s(&"x".repeat(100_000));
    let list = build(&[&big[..], b"q\x00]("].concat(), b"h\x00", 50_000, b"e.");
    assert!(parse(&list).unwrap().is_empty());
    let head = [&big[..], b"q\x00", &tensor("0"), b"q\x01}("].concat();
    assert_err(&build(&head, b"h\x00h\x01", 1000, b"u."), TOO_MUCH);
}

/// A dict holding the same dict twice, 40 levels down: 2^40 tensors to list from a few hundred
/// bytes.
#[test]
fn a_dag_of_shared_dicts_runs_out_of_budget_when_flattened() {
    let leaf = [
        &b"}("[..],
        &s("a"),
        &tensor("0"),
        b"q\x01",
        &s("b"),
        b"h\x01uq\x00",
    ]
    .concat();
    let level = [&b"}("[..], &s("a"), b"h\x00", &s("b"), b"h\x00uq\x00"].concat();
    let p = build(&leaf, &level, 40, b".");
    assert!(p.len() < 1000);
    assert_err(&p, TOO_MUCH);
    // Twelve levels (8192 tensors) fit.
    assert_eq!(parse(&build(&leaf, &level, 12, b".")).unwrap().len(), 8192);
}

/// Growing a memoized container copies it; growing the fetched copy again and again is quadratic.
#[test]
fn copy_on_write_copies_are_charged() {
    assert_err(
        &build(b"]q\x00", b"h\x00K\x01aq\x00", 20_000, b"."),
        TOO_MUCH,
    );
    assert_err(
        &build(b"}q\x00", b"h\x00K\x01K\x01sq\x00", 20_000, b"."),
        TOO_MUCH,
    );
}

/// Error messages name types, never contents, which sharing can make exponentially large.
#[test]
fn errors_do_not_print_shared_values() {
    let dag = build(b"])q\x00", b"h\x00h\x00\x86q\x00", 60, b"");
    let call = b"ctorch._utils\n_rebuild_tensor_v2\n(h\x00K\x00h\x00h\x00tR.";
    let e = parse(&[&dag[..], call].concat()).unwrap_err();
    assert!(e.len() < 200, "{e}");
}

/// A flat state dict written as torch writes it (storage type, "storage" and "cpu" memoized)
/// stays well inside the budget.
#[test]
fn a_large_state_dict_fits_the_budget() {
    let n = 20_000;
    // The shared values are left under the dict, which STOP then takes from the top.
    let mut p = [&b"\x80\x02"[..], &s("storage"), b"q\x01"].concat();
    p.extend(b"ctorch\nFloatStorage\nq\x02");
    p.extend(s("cpu"));
    p.extend(b"q\x03ctorch._utils\n_rebuild_tensor_v2\nq\x04");
    p.extend(b"ccollections\nOrderedDict\nq\x05}q\x00(");
    for i in 0..n {
        p.extend(s(&format!("transformer.h.{i}.attn.weight")));
        p.extend(b"h\x04((h\x01h\x02");
        p.extend(s(&i.to_string()));
        p.extend(b"h\x03K\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89h\x05)RtR");
    }
    p.extend(b"u.");
    let mut work = Work::for_input(p.len());
    let root = run(&p, &mut work).unwrap();
    let t = flatten(root, &mut work).unwrap();
    assert_eq!(t.len(), n);
    let spent = MIN_WORK.max(WORK_PER_BYTE * p.len() as u64) - work.left;
    assert!(
        spent < 3 * p.len() as u64,
        "{spent} units for {} bytes",
        p.len()
    );
}
