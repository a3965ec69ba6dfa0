//! The blocks against the `gguf` package's bytes (`tests/fixtures/make_quant_blocks.py`), and
//! the dot forms against each other (bit for bit) and against f64 sums.

use super::dot::{forms, matvec, row_dot, DotBlock, Forms};
use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Quantizing the fixture's values gives the `gguf` package's bytes exactly (scales rounded
/// after division, `1/d` from the unrounded scale, half-away rounding for Q8_0, truncation and
/// the signed maximum for Q4_0, a scale past f16 stored as infinity), and dequantizing gives its
/// values.
fn matches_gguf<B: Block>() {
    let values = f32s(&fixture("values.f32"));
    let want = fixture(&format!("{}.bin", B::NAME));
    let mut blocks = vec![B::zeroed(); values.len() / QK];
    quantize(&values, &mut blocks);
    let got: &[u8] = bytemuck::cast_slice(&blocks);
    assert_eq!(got.len(), want.len());
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        let size = std::mem::size_of::<B>();
        panic!(
            "{}: byte {i} (block {}, value {}) differs: {got:?} vs {want:?}",
            B::NAME,
            i / size,
            i / size * QK,
            got = &got[i / size * size..][..size],
            want = &want[i / size * size..][..size],
        );
    }
    let want = f32s(&fixture(&format!("{}.deq.f32", B::NAME)));
    let mut deq = vec![0f32; values.len()];
    dequantize(&blocks, &mut deq);
    for (i, (a, b)) in deq.iter().zip(&want).enumerate() {
        assert!(
            a == b || (a.is_nan() && b.is_nan()),
            "{}: value {i}: {a} vs {b}",
            B::NAME
        );
    }
}

#[test]
fn q8_0_bytes_equal_gguf() {
    matches_gguf::<BlockQ8_0>();
}

#[test]
fn q4_0_bytes_equal_gguf() {
    matches_gguf::<BlockQ4_0>();
}

#[test]
fn blocks_have_ggml_sizes() {
    assert_eq!(std::mem::size_of::<BlockQ8_0>(), 34);
    assert_eq!(std::mem::size_of::<BlockQ4_0>(), 18);
}

/// A generator of values with a spread of magnitudes (no dependency on `rand`).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            u * if i % 97 == 0 { 8.0 } else { 0.1 }
        })
        .collect()
}

/// Every form of the dot gives the same bits, and they are the f64 dot of the dequantized
/// weights up to f32 rounding.
fn forms_agree<B: DotBlock>(pick: impl Fn(&Forms) -> fn(&[B], &[f32]) -> f32) {
    for (k, seed) in [(1, 1), (3, 2), (24, 3), (48, 4), (176, 5)] {
        let mut w = vec![B::zeroed(); 5 * k];
        quantize(&values(5 * k * QK, seed), &mut w);
        let x = values(k * QK, seed + 100);
        let mut deq = vec![0f32; k * QK];
        for row in w.chunks_exact(k) {
            dequantize(row, &mut deq);
            let exact: f64 = deq.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = deq
                .iter()
                .zip(&x)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let all = forms();
            let first = pick(&all[0])(row, &x);
            assert!(
                (first as f64 - exact).abs() <= 1e-5 * scale.max(1e-30),
                "{} k={k}: {first} vs {exact}",
                B::NAME
            );
            for f in &all {
                let got = pick(f)(row, &x);
                assert_eq!(got.to_bits(), first.to_bits(), "{} {} k={k}", B::NAME, f.0);
            }
            assert_eq!(row_dot(row, &x).to_bits(), first.to_bits());
        }
    }
}

#[test]
fn q8_0_dot_forms_agree_bit_for_bit() {
    forms_agree::<BlockQ8_0>(|f| f.1);
}

#[test]
fn q4_0_dot_forms_agree_bit_for_bit() {
    forms_agree::<BlockQ4_0>(|f| f.2);
}

/// The matrix–vector product is the row dot of every row, whatever the split.
#[test]
fn matvec_is_the_row_dot_of_each_row() {
    for rows in [1, 7, 33, 300] {
        let k = 6;
        let mut w = vec![BlockQ8_0::zeroed(); rows * k];
        quantize(&values(rows * k * QK, rows as u64), &mut w);
        let x = values(k * QK, 7);
        let mut y = vec![f32::NAN; rows];
        matvec(&x, &w, &mut y);
        for (r, row) in w.chunks_exact(k).enumerate() {
            assert_eq!(
                y[r].to_bits(),
                row_dot(row, &x).to_bits(),
                "rows={rows} r={r}"
            );
        }
    }
    let mut y = [1.0f32; 3];
    matvec::<BlockQ4_0>(&[], &[], &mut y);
    assert_eq!(y, [0.0; 3]);
}

/// Round trips stay within half a step of the scale (Q8_0) or one step (Q4_0's asymmetric
/// range), plus what rounding the scale to f16 moves the largest code (the codes are found with
/// the unrounded scale), and a block of zeros stays zeros.
#[test]
fn round_trips_stay_within_a_step() {
    let x = values(64 * QK, 11);
    let check = |deq: &[f32], step: &dyn Fn(usize) -> f32, name: &str| {
        for (i, (a, b)) in deq.iter().zip(&x).enumerate() {
            assert!(
                (a - b).abs() <= step(i / QK) * 1.0001,
                "{name} {i}: {a} vs {b}"
            );
        }
    };
    let mut q8 = vec![BlockQ8_0::zeroed(); 64];
    quantize(&x, &mut q8);
    let mut deq = vec![0f32; x.len()];
    dequantize(&q8, &mut deq);
    check(&deq, &|b| q8[b].scale() * (0.5 + 127.0 / 2048.0), "q8_0");
    let mut q4 = vec![BlockQ4_0::zeroed(); 64];
    quantize(&x, &mut q4);
    dequantize(&q4, &mut deq);
    check(
        &deq,
        &|b| q4[b].scale().abs() * (1.0 + 8.0 / 2048.0),
        "q4_0",
    );
    let zero = BlockQ8_0::quantize(&[0.0; QK]);
    assert_eq!(zero, BlockQ8_0::zeroed());
    assert_eq!(BlockQ4_0::quantize(&[0.0; QK]).qs, [0x88; QK / 2]);
}

/// Speed probe (`cargo test --release … quant_matvec_speed -- --ignored --nocapture`): one
/// matrix–vector product over a 4096 × 4096 weight held f32, Q8_0 and Q4_0 (GB/s of weight read).
#[test]
#[ignore]
fn quant_matvec_speed() {
    let (n, k) = (4096, 4096);
    let w = values(n * k, 3);
    let x = values(k, 4);
    let mut y = vec![0f32; n];
    let mut time = |name: &str, bytes: usize, f: &mut dyn FnMut(&mut [f32])| {
        f(&mut y);
        let t = std::time::Instant::now();
        let reps = 20;
        for _ in 0..reps {
            f(&mut y);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{name}: {:.2} ms, {:.1} GB/s",
            s * 1e3,
            bytes as f64 / s / 1e9
        );
    };
    let wt = crate::kernels::transpose::transpose(&w, n, k);
    time("f32 tiles", n * k * 4, &mut |y| {
        crate::kernels::linear::tiles::matvec(&x, &wt, y)
    });
    let mut q8 = vec![BlockQ8_0::zeroed(); n * k / QK];
    quantize(&w, &mut q8);
    time("q8_0", q8.len() * 34, &mut |y| matvec(&x, &q8, y));
    let mut q4 = vec![BlockQ4_0::zeroed(); n * k / QK];
    quantize(&w, &mut q4);
    time("q4_0", q4.len() * 18, &mut |y| matvec(&x, &q4, y));
}

/// A few activation rows give, row by row, the bits of decoding each alone; many rows (the
/// dequantized GEMM) the same values up to summation order, in every band and tail.
#[test]
fn many_rows_match_one_row_at_a_time() {
    use super::many::{few, prefill};
    for (m, n, k) in [
        (1, 5, 3),
        (3, 48, 2),
        (8, 200, 6),
        (13, 401, 4),
        (20, 97, 18),
    ] {
        let mut w = vec![BlockQ4_0::zeroed(); n * k];
        quantize(&values(n * k * QK, n as u64), &mut w);
        let x = values(m * k * QK, m as u64 + 50);
        let mut one = vec![0f32; m * n];
        for i in 0..m {
            let xi = &x[i * k * QK..(i + 1) * k * QK];
            for r in 0..n {
                one[i * n + r] = row_dot(&w[r * k..(r + 1) * k], xi);
            }
        }
        let mut y = vec![f32::NAN; m * n];
        few(&x, m, &w, n, &mut y);
        for (a, b) in y.iter().zip(&one) {
            assert_eq!(a.to_bits(), b.to_bits(), "few m={m} n={n} k={k}");
        }
        let mut y = vec![f32::NAN; m * n];
        if prefill(&x, m, &w, n, &mut y) {
            for (j, (a, b)) in y.iter().zip(&one).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "prefill m={m} n={n} k={k} {j}: {a} vs {b}"
                );
            }
        }
    }
}

/// Speed probe: 128 rows through a 576 → 1536 weight (an MLP of the SmolLM2-135M shape) by the
/// f32 GEMM and by the Q8_0 / Q4_0 band path (`… quant_prefill_speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn quant_prefill_speed() {
    let (m, n, k) = (128, 1536, 576);
    let w = values(n * k, 5);
    let x = values(m * k, 6);
    let mut y = vec![0f32; m * n];
    let mut time = |name: &str, f: &mut dyn FnMut(&mut [f32])| {
        f(&mut y);
        let t = std::time::Instant::now();
        for _ in 0..10 {
            f(&mut y);
        }
        println!("{name}: {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    };
    let wt = crate::kernels::transpose::transpose(&w, n, k);
    time("f32 gemm", &mut |y| {
        crate::kernels::linear::prefill::gemm(&x, &wt, y, m, k, n);
    });
    let mut q8 = vec![BlockQ8_0::zeroed(); n * k / QK];
    quantize(&w, &mut q8);
    time("q8_0 bands", &mut |y| {
        super::many::prefill(&x, m, &q8, n, y);
    });
    let mut q4 = vec![BlockQ4_0::zeroed(); n * k / QK];
    quantize(&w, &mut q4);
    time("q4_0 bands", &mut |y| {
        super::many::prefill(&x, m, &q4, n, y);
    });
    time("q4_0 few (row dots)", &mut |y| {
        super::many::few(&x, m, &q4, n, y)
    });
}
