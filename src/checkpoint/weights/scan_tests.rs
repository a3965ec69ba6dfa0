//! The NaN/Inf scan and the widening of stored values, small tensors and large alike.

#[test]
fn first_non_finite_finds_the_first_nan_or_infinity() {
    let mut v = vec![1.5f32; 10_000];
    assert_eq!(super::first_non_finite(&v), None);
    for (i, bad) in [
        (0, f32::NAN),
        (4095, f32::INFINITY),
        (4096, f32::NEG_INFINITY),
    ] {
        let mut w = v.clone();
        w[i] = bad;
        w[9_999] = f32::NAN;
        assert_eq!(super::first_non_finite(&w), Some(i));
    }
    v[9_999] = f32::MAX;
    assert_eq!(super::first_non_finite(&v), None);
}

/// Small tensors (collected) and large ones (filled in pieces) decode every stored type to
/// the same values, each the exact widening (f64: the nearest f32) of the stored one.
#[test]
fn decode_small_and_large_tensors_alike() {
    use safetensors::Dtype;
    let vals: Vec<f64> = (0..super::PIECE + 37)
        .map(|i| ((i % 1999) as f64 - 999.0) * 0.013_7)
        .collect();
    let cases: [(Dtype, Vec<u8>, Vec<f32>); 4] = [
        (
            Dtype::F32,
            vals.iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
            vals.iter().map(|&v| v as f32).collect(),
        ),
        (
            Dtype::F16,
            vals.iter()
                .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
                .collect(),
            vals.iter()
                .map(|&v| half::f16::from_f64(v).to_f32())
                .collect(),
        ),
        (
            Dtype::BF16,
            vals.iter()
                .flat_map(|&v| half::bf16::from_f64(v).to_le_bytes())
                .collect(),
            vals.iter()
                .map(|&v| half::bf16::from_f64(v).to_f32())
                .collect(),
        ),
        (
            Dtype::F64,
            vals.iter().flat_map(|&v| v.to_le_bytes()).collect(),
            vals.iter().map(|&v| v as f32).collect(),
        ),
    ];
    for (dtype, bytes, want) in cases {
        let width = bytes.len() / want.len();
        for len in [0, 1, 1000, super::PIECE, want.len()] {
            let got = super::decode(&bytes[..len * width], dtype).unwrap();
            let same = got
                .iter()
                .zip(&want[..len])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(got.len() == len && same, "{dtype:?}, {len} values");
        }
    }
}
