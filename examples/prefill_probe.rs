#[path = "../benches/common/mod.rs"]
mod common;
fn main() {
    type B = graftlm::backend::DefaultCpu;
    let cfg = common::smollm2_135m();
    let model = common::random_model::<B>(&cfg, 1);
    let long: Vec<u32> = (0..128u32).map(|i| 1 + i % 300).collect();
    for _ in 0..5 {
        let mut c = model.new_cache(long.len());
        let t = std::time::Instant::now();
        let _ = model.forward(&long, &mut c, true).unwrap();
        println!("prefill {:.1} tok/s", 128.0 / t.elapsed().as_secs_f64());
    }
}
