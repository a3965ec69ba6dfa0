//! Tests of the matrix–vector kernels.

use super::*;

fn reference(x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| {
            x.iter()
                .enumerate()
                .map(|(i, &xi)| xi as f64 * w[i * n + j] as f64)
                .sum()
        })
        .collect()
}

/// Values in [-0.5, 0.5) from a linear congruential sequence.
fn rnd(s: &mut u32) -> f32 {
    *s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    (*s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
}

#[test]
fn matches_a_double_precision_reference_for_awkward_shapes() {
    let mut s = 7u32;
    for (k, n) in [
        (1, 1),
        (3, 5),
        (7, 513),
        (576, 1536),
        (130, 4099),
        (4, 2 * TILE + 3),
    ] {
        let x: Vec<f32> = (0..k).map(|_| rnd(&mut s)).collect();
        let w: Vec<f32> = (0..k * n).map(|_| rnd(&mut s)).collect();
        let mut y = vec![f32::NAN; n];
        matvec(&x, &w, &mut y);
        let want = reference(&x, &w, n);
        for (j, (&a, &b)) in y.iter().zip(&want).enumerate() {
            assert!((a as f64 - b).abs() < 1e-4, "k={k} n={n} j={j}: {a} vs {b}");
        }
    }
}

#[test]
fn sixteen_bit_weights_give_the_f32_results_of_their_values_bit_for_bit() {
    let mut s = 5u32;
    for (k, n) in [(1, 1), (9, 17), (130, 4099), (576, 960), (3, 2 * TILE + 5)] {
        let x: Vec<f32> = (0..k).map(|_| rnd(&mut s)).collect();
        let w: Vec<f32> = (0..k * n).map(|_| rnd(&mut s)).collect();
        let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
        let wide_bf: Vec<f32> = bf.iter().map(|v| v.to_f32()).collect();
        let wide_hf: Vec<f32> = hf.iter().map(|v| v.to_f32()).collect();
        let run = |f: &dyn Fn(&mut [f32])| {
            let mut y = vec![f32::NAN; n];
            f(&mut y);
            y
        };
        let a = run(&|y| matvec(&x, &bf, y));
        let b = run(&|y| matvec(&x, &wide_bf, y));
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "bf16 k={k} n={n}"
        );
        let a = run(&|y| matvec(&x, &hf, y));
        let b = run(&|y| matvec(&x, &wide_hf, y));
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "f16 k={k} n={n}"
        );
        // And the widening itself is exact.
        assert!(bf
            .iter()
            .zip(&wide_bf)
            .all(|(h, f)| Weight::to_f32(*h) == *f));
    }
}
