//! The attention kernel against a double-precision reference and its forms against each other.

use super::*;

/// The register blocks (AVX-512, or AVX2 with `GRAFTLM_NO_AVX512=1`) and the plain one give
/// the same bits (one fused chain each, same order).
#[test]
fn block8_paths_agree_bit_for_bit() {
    let mut seed = 3u32;
    let mut rnd = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    for (steps, stride) in [(1, 16), (7, 19), (64, 80)] {
        let a: Vec<[f32; 8]> = (0..steps).map(|_| std::array::from_fn(|_| rnd())).collect();
        let b: Vec<f32> = (0..(steps - 1) * stride + 16).map(|_| rnd()).collect();
        let mut plain = [[0f32; 16]; 8];
        block8_plain(&a, &b, stride, &mut plain);
        assert_eq!(
            block8(&a, &b, stride),
            plain,
            "{steps} steps, stride {stride}"
        );
        for r in 0..8 {
            for l in 0..16 {
                let want: f64 = (0..steps)
                    .map(|i| a[i][r] as f64 * b[i * stride + l] as f64)
                    .sum();
                assert!((plain[r][l] as f64 - want).abs() < 1e-5);
            }
        }
    }
}
