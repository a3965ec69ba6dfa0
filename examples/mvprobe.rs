use std::time::Instant;
fn main() {
    probe();
    let k = 576usize;
    let n = 49152usize * 2; // 226 MB
    let w: Vec<f32> = (0..k * n).map(|i| (i % 97) as f32 * 0.001).collect();
    let x: Vec<f32> = (0..k).map(|i| i as f32 * 0.01).collect();
    let mut y = vec![0f32; n];
    for _ in 0..2 {
        graftlm::model::matvec::matvec(&x, &w, &mut y);
    }
    let t = Instant::now();
    let reps = 10;
    for _ in 0..reps {
        graftlm::model::matvec::matvec(&x, &w, &mut y);
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "matvec rayon: {:.1} GB/s",
        (reps * k * n * 4) as f64 / s / 1e9
    );
    // plain read probe
    let t = Instant::now();
    let mut acc = 0f32;
    for _ in 0..reps {
        acc += w.iter().copied().sum::<f32>();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "sum 1 thread: {:.1} GB/s ({acc})",
        (reps * k * n * 4) as f64 / s / 1e9
    );
    // shapes of SmolLM: 576x576 etc
    for (kk, nn) in [
        (576usize, 576usize),
        (576, 192),
        (576, 1536),
        (1536, 576),
        (576, 960),
    ] {
        let w: Vec<f32> = (0..kk * nn).map(|i| (i % 97) as f32 * 0.001).collect();
        let x: Vec<f32> = (0..kk).map(|i| i as f32 * 0.01).collect();
        let mut y = vec![0f32; nn];
        let reps = 2000;
        let t = Instant::now();
        for _ in 0..reps {
            graftlm::model::matvec::matvec(&x, &w, &mut y);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{kk}x{nn}: {:.1} us, {:.1} GB/s (cache-resident)",
            s / reps as f64 * 1e6,
            (reps * kk * nn * 4) as f64 / s / 1e9
        );
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn sum512(v: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut a = [_mm512_setzero_ps(); 4];
    let p = v.as_ptr();
    let mut i = 0;
    while i + 64 <= v.len() {
        for (u, acc) in a.iter_mut().enumerate() {
            *acc = _mm512_add_ps(*acc, _mm512_loadu_ps(p.add(i + 16 * u)));
        }
        i += 64;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(a[0], a[1]),
        _mm512_add_ps(a[2], a[3]),
    ))
}

#[allow(dead_code)]
pub fn probe() {
    let n = 135_000_000usize; // 540 MB
    let v: Vec<f32> = vec![1.0; n];
    for threads in [1usize, 2] {
        let t = std::time::Instant::now();
        let reps = 5;
        let mut s = 0.0;
        for _ in 0..reps {
            s += std::thread::scope(|sc| {
                let hs: Vec<_> = v
                    .chunks(n.div_ceil(threads))
                    .map(|c| sc.spawn(move || unsafe { sum512(c) }))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<f32>()
            });
        }
        println!(
            "read probe {threads} thread(s): {:.1} GB/s ({s})",
            (reps * n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
        );
    }
}
