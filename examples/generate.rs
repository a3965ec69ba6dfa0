//! The same small program as `ffi/c/example.c`, `ffi/cpp/example.cpp` and the Python tests:
//! load, optionally attach an adapter, stream a greedy generation, print the ids.
//!
//! `cargo run --example generate -- examples/demo/model "" "The Python interpreter"`

use graftlm::{AdapterSpec, GenerateOptions, ModelBuilder, PromptStyle, SamplingParams, Tokenizer};

fn main() -> graftlm::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("examples/demo/model");
    let adapter = args.get(2).filter(|a| !a.is_empty());
    let prompt = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("The Python interpreter");
    let mut builder = ModelBuilder::new().base(base);
    if let Some(a) = adapter {
        builder = builder.adapter(a.parse::<AdapterSpec>()?);
    }
    let plan = builder.plan()?;
    let model = plan.build::<graftlm::backend::DefaultCpu>(&Default::default())?;
    let tok = Tokenizer::from_dir(&plan.checkpoint.dir)?;
    let style = PromptStyle::resolve(&plan.checkpoint.dir, &plan.checkpoint.config.name)?;
    let ids = tok.encode(&style.apply(prompt, None))?;
    let opts = GenerateOptions::new(40, SamplingParams::greedy());
    print!("{prompt}");
    let out = graftlm::generate(&model, &tok, &ids, &opts, &mut |piece| {
        print!("{piece}");
        true
    })?;
    let ids: Vec<String> = out.generated_ids.iter().map(u32::to_string).collect();
    println!("\nids: {}", ids.join(" "));
    Ok(())
}
