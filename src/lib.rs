//! # graftlm
//!
//! Runs GPT-style language models from LitGPT and Hugging Face checkpoints, generic over a burn
//! backend, and grafts fine-tuning adapters (LoRA, PEFT, LLaMA-Adapter) onto them: kept apart from
//! the base weights or merged into them.
//!
//! ```no_run
//! # #[cfg(feature = "flex")] {
//! use graftlm::{backend::Flex, Checkpoint, GenerateOptions, PromptStyle, Tokenizer};
//!
//! let ckpt = Checkpoint::open("examples/demo/model")?;
//! let model = ckpt.load::<Flex>(&Default::default())?;
//! let tokenizer = Tokenizer::from_dir(&ckpt.dir)?;
//! let style = PromptStyle::resolve(&ckpt.dir, &ckpt.config.name)?;
//! let ids = tokenizer.encode(&style.apply("The Python interpreter", None))?;
//! let out = graftlm::generate(&model, &tokenizer, &ids, &GenerateOptions::default(), &mut |piece| {
//!     print!("{piece}");
//!     true
//! })?;
//! println!("\n{} tokens", out.generated_ids.len());
//! # }
//! # Ok::<(), graftlm::Error>(())
//! ```
//!
//! Data flows one way: config → weights → [`Model`] → KV cache → sampler → tokens → text.

pub mod adapters;
pub mod backend;
mod builder;
pub mod cache;
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub mod capi;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod export;
mod file;
pub mod generate;
mod kernels;
pub mod model;
pub mod prompt;
pub mod sampling;
pub mod tokenizer;

/// The parts beneath [`Model`], for callers who build or inspect models piece by piece: the
/// blocks, attention, MLP, norms, RoPE tables and the linear layers with their adapter
/// updates. They follow graftlm's internals and may change between minor versions; everything
/// else in the crate is the stable surface.
pub mod advanced {
    pub use crate::kernels::transpose::transpose;
    pub use crate::model::attention::{Attention, Prefix};
    pub use crate::model::block::Block;
    pub use crate::model::linear::{Linear, RowGrafts};
    pub use crate::model::mlp::Mlp;
    pub use crate::model::norm::Norm;
    pub use crate::model::rope::{inv_freq, Rope};
    pub use crate::model::update::{Affine, LowRank, Update};
}

pub use adapters::{Adapter, AdapterSet, Mode};
pub use builder::{AdapterSpec, ModelBuilder, Plan};
pub use cache::KvCache;
pub use checkpoint::Checkpoint;
pub use config::ModelConfig;
pub use error::{Error, Result};
pub use generate::{
    generate, generate_batch, BatchRequest, GenerateOptions, Generation, StopReason,
};
pub use model::Model;
pub use prompt::PromptStyle;
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::{TextStream, Tokenizer};
