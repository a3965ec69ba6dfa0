//! `Model<B>`: embedding → blocks → final norm → output head, generic over a burn backend.
//!
//! The model knows nothing about checkpoint formats (see `checkpoint::names`) nor about adapters
//! (they enter through [`crate::advanced::Linear`]). Its parts (blocks, attention, linears, ...)
//! are crate-internal; [`crate::advanced`] re-exports them for callers who need them.

pub(crate) mod attention;
pub(crate) mod block;
mod blocks;
mod build;
pub(crate) mod linear;
mod load;
pub(crate) mod mlp;
pub(crate) mod norm;
pub(crate) mod precision;
pub(crate) mod rope;
pub(crate) mod update;

use burn::prelude::*;

pub(crate) use attention::{Attention, Prefix};
pub(crate) use block::Block;
pub(crate) use linear::{Linear, RowGrafts};
pub(crate) use mlp::Mlp;
pub(crate) use norm::Norm;
pub use precision::{holds_16bit, WeightDtype};
pub(crate) use rope::Rope;

use crate::backend::ModelBackend;
use crate::cache::KvCache;
use crate::checkpoint::AdapterFormat;
use crate::config::{LinearId, ModelConfig};
use crate::error::{Error, Result};

/// What has been grafted onto a model through its [`Linear`] seam (bookkeeping only; the numbers
/// live in the linears).
#[derive(Debug, Clone, PartialEq)]
pub struct GraftInfo {
    pub name: String,
    /// Where it came from (file path).
    pub source: String,
    /// Its file format (recorded, never branched on here).
    pub format: AdapterFormat,
    pub step: Option<u64>,
    pub scale: f32,
    pub active: bool,
    pub merged: bool,
    /// Internal names of the linears it updates.
    pub linears: Vec<String>,
    /// Internal names of the norms it replaces.
    pub norms: Vec<String>,
    /// Layers whose attention carries its prefix.
    pub prefix_layers: Vec<usize>,
}

/// Where the token embeddings are looked up when the model holds them apart from its head.
#[derive(Debug, Clone)]
enum Embedding<B: ModelBackend> {
    /// Its own `[vocab, n_embd]` matrix.
    Own(Tensor<B, 2>),
    /// The base head's held weight (`[n_embd, vocab]` stored as the shape says), sharing its
    /// storage: kept when an adapter may change the head that stood in for the embedding.
    Head(Tensor<B, 2>, crate::kernels::panels::WeightShape),
}

/// A decoder-only language model on backend `B`.
#[derive(Debug, Clone)]
pub struct Model<B: ModelBackend> {
    config: ModelConfig,
    grafts: Vec<GraftInfo>,
    /// The embedding when it is not read from the head's current weight (`None`: tied, or
    /// stored as one matrix).
    wte: Option<Embedding<B>>,
    blocks: Vec<Block<B>>,
    ln_f: Norm<B>,
    lm_head: Linear<B>,
    rope: Rope<B>,
    device: B::Device,
    /// How the weight matrices are held (never `Auto`).
    precision: WeightDtype,
}

/// A loader's way to lend a matrix in place: `in_place(name, f)` calls `f(parts, shape)` (the
/// parts, stacked by rows, make the `[out, in]` matrix of `shape`) and returns `true`, or returns
/// `false` when the matrix has to be read into memory.
pub(crate) type InPlace<'a> = dyn FnMut(&str, &mut dyn FnMut(&[crate::checkpoint::Values<'_>], &[usize])) -> Result<bool>
    + 'a;

impl<B: ModelBackend> Model<B> {
    /// How the weight matrices are held: f32, bf16 or f16 (never `Auto`). Arithmetic is f32.
    pub fn weight_dtype(&self) -> WeightDtype {
        self.precision
    }

    /// Whether merging into 16-bit weights rounds to 16 bits (an explicit `bf16`/`f16` choice) or
    /// keeps the merged weight in f32 (`auto`: results as with f32 weights).
    pub(crate) fn set_round_merges(&mut self, on: bool) {
        self.lm_head.set_round_merges(on);
        for b in &mut self.blocks {
            b.attn.qkv.set_round_merges(on);
            b.attn.proj.set_round_merges(on);
            b.mlp.fc_1.set_round_merges(on);
            if let Some(l) = b.mlp.fc_2.as_mut() {
                l.set_round_merges(on);
            }
            b.mlp.proj.set_round_merges(on);
        }
    }

    /// Bytes held by the weight matrices (every linear's weight and the embedding when it has
    /// its own copy; not norms, biases or adapters), as actually stored on the device.
    pub fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor<B, 2>| t.shape().num_elements() * t.dtype().size();
        // (A kept head is shared with the head until the head changes.)
        let own = |e: &Embedding<B>| match e {
            Embedding::Own(t) | Embedding::Head(t, _) => bytes(t),
        };
        let mut n = self.wte.as_ref().map_or(0, own) + bytes(self.lm_head.held_weight().0);
        for b in &self.blocks {
            let mlp = [Some(&b.mlp.fc_1), b.mlp.fc_2.as_ref(), Some(&b.mlp.proj)];
            for l in [Some(&b.attn.qkv), Some(&b.attn.proj)]
                .into_iter()
                .chain(mlp)
            {
                n += l.map_or(0, |l| bytes(l.held_weight().0));
            }
        }
        n
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// What is grafted onto the model, in attach order.
    pub fn grafts(&self) -> &[GraftInfo] {
        &self.grafts
    }

    /// Mutable bookkeeping of grafts (for the adapters module).
    pub(crate) fn grafts_mut(&mut self) -> &mut Vec<GraftInfo> {
        &mut self.grafts
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A KV cache sized for `capacity` positions (at most `block_size`).
    pub fn new_cache(&self, capacity: usize) -> KvCache<B> {
        KvCache::new(self.config.n_layer, capacity.min(self.config.block_size))
    }

    /// The linear layer with internal name `name` (`transformer.h.3.attn.qkv`, `lm_head`, ...;
    /// see [`LinearId`]).
    pub(crate) fn linear_mut(&mut self, name: &str) -> Option<&mut Linear<B>> {
        self.linear_at_mut(LinearId::parse(name)?)
    }

    /// The linear layer `id` (mutable).
    pub(crate) fn linear_at_mut(&mut self, id: LinearId) -> Option<&mut Linear<B>> {
        if id == LinearId::Head {
            // The head may be about to change (an adapter attached or merged): the embedding it
            // stood in for keeps the base values.
            if self.wte.is_none() {
                let (held, shape) = self.lm_head.held_weight();
                self.wte = Some(Embedding::Head(held.clone(), shape));
            }
            return Some(&mut self.lm_head);
        }
        let block = self.blocks.get_mut(id.layer()?)?;
        let gated = block.mlp.fc_2.is_some();
        match id {
            LinearId::Qkv(_) => Some(&mut block.attn.qkv),
            LinearId::Proj(_) => Some(&mut block.attn.proj),
            LinearId::Fc(_) if !gated => Some(&mut block.mlp.fc_1),
            LinearId::Gate(_) if gated => Some(&mut block.mlp.fc_1),
            LinearId::Up(_) => block.mlp.fc_2.as_mut(),
            LinearId::MlpProj(_) => Some(&mut block.mlp.proj),
            _ => None,
        }
    }

    /// The attention of layer `i`.
    pub(crate) fn attention_mut(&mut self, i: usize) -> Option<&mut Attention<B>> {
        self.blocks.get_mut(i).map(|b| &mut b.attn)
    }

    /// The norm with internal name `name` (`transformer.h.3.norm_1`, `transformer.ln_f`).
    pub(crate) fn norm_mut(&mut self, name: &str) -> Option<&mut Norm<B>> {
        if name == "transformer.ln_f" {
            return Some(&mut self.ln_f);
        }
        let rest = name.strip_prefix("transformer.h.")?;
        let (i, part) = rest.split_once('.')?;
        let block = self.blocks.get_mut(i.parse::<usize>().ok()?)?;
        match part {
            "norm_1" => block.norm_1.as_mut(),
            "norm_2" => block.norm_2.as_mut(),
            _ => None,
        }
    }

    /// The linear layer with internal name `name` (`transformer.h.3.attn.qkv`, `lm_head`, ...).
    pub fn linear(&self, name: &str) -> Option<&Linear<B>> {
        self.linear_at(LinearId::parse(name)?)
    }

    /// The linear layer `id`.
    pub(crate) fn linear_at(&self, id: LinearId) -> Option<&Linear<B>> {
        if id == LinearId::Head {
            return Some(&self.lm_head);
        }
        let block = self.blocks.get(id.layer()?)?;
        let gated = block.mlp.fc_2.is_some();
        match id {
            LinearId::Qkv(_) => Some(&block.attn.qkv),
            LinearId::Proj(_) => Some(&block.attn.proj),
            LinearId::Fc(_) if !gated => Some(&block.mlp.fc_1),
            LinearId::Gate(_) if gated => Some(&block.mlp.fc_1),
            LinearId::Up(_) => block.mlp.fc_2.as_ref(),
            LinearId::MlpProj(_) => Some(&block.mlp.proj),
            _ => None,
        }
    }

    /// Runs `ids` at positions `cache.len()..` and returns logits `[t, padded_vocab]`, or only the
    /// last position's `[1, padded_vocab]` when `last_only`.
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache<B>,
        last_only: bool,
    ) -> Result<Tensor<B, 2>> {
        self.forward_rows(ids, std::slice::from_mut(cache), last_only, None)
    }

    /// The common forward pass: `ids` are `t` tokens of one sequence (one cache) or one new token
    /// for each of `n` sequences (`n` caches); `rows` (one entry per token) picks per-row updates
    /// in every linear (see [`Linear::forward_rows`]; the adapters module checks the names).
    pub(crate) fn forward_rows(
        &self,
        ids: &[u32],
        caches: &mut [KvCache<B>],
        last_only: bool,
        rows: Option<RowGrafts<'_>>,
    ) -> Result<Tensor<B, 2>> {
        B::run(|| self.forward_rows_here(ids, caches, last_only, rows))
    }

    /// [`Model::forward_rows`] on the calling thread.
    fn forward_rows_here(
        &self,
        ids: &[u32],
        caches: &mut [KvCache<B>],
        last_only: bool,
        rows: Option<RowGrafts<'_>>,
    ) -> Result<Tensor<B, 2>> {
        let t = ids.len();
        if t == 0 {
            return Err(Error::EmptyPrompt);
        }
        let n = caches.len();
        if n != 1 && n != t {
            return Err(Error::invalid(
                "caches",
                format!("{n} caches for {t} tokens (one per sequence, one token each)"),
            ));
        }
        if rows.is_some_and(|r| r.len() != t) {
            return Err(Error::invalid("rows", "one adapter choice per token"));
        }
        let per_cache = if n == 1 { t } else { 1 };
        for cache in caches.iter() {
            if cache.len() + per_cache > cache.capacity() {
                return Err(Error::ContextOverflow {
                    prompt_tokens: cache.len(),
                    max_new_tokens: per_cache,
                    total: cache.len() + per_cache,
                    block_size: cache.capacity(),
                });
            }
        }
        let vocab = self.config.padded_vocab_size;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::invalid(
                "ids",
                format!("token id {bad} is outside the vocabulary (size {vocab})"),
            ));
        }
        let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [t]), &self.device);
        let emb = match &self.wte {
            Some(Embedding::Own(wte)) => wte.clone().select(0, idx),
            Some(Embedding::Head(held, shape)) => linear::columns(held, *shape, ids),
            None => self.lm_head.columns(ids),
        };
        let emb = precision::as_f32(&emb);
        // [1, t, e] for one sequence, [n, 1, e] for n sequences.
        let mut x = if n == 1 {
            emb.unsqueeze_dim::<3>(0)
        } else {
            emb.unsqueeze_dim::<3>(1)
        };
        if self.config.scale_embeddings {
            x = x * (self.config.n_embd as f64).sqrt();
        }
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(i, x, &self.rope, caches, rows);
        }
        caches.iter_mut().for_each(|c| c.advance(per_cache));
        let (x, rows) = if last_only && n == 1 {
            (x.narrow(1, t - 1, 1), rows.map(|r| &r[t - 1..]))
        } else {
            (x, rows)
        };
        let x = self.ln_f.forward(x);
        let mut logits = self.lm_head.forward_rows(x, rows);
        if let Some(c) = self.config.extras.final_softcap {
            logits = (logits / c).tanh() * c;
        }
        let [b, r, v] = logits.dims();
        Ok(logits.reshape([b * r, v]))
    }
}

/// Copies a `[1, vocab]` logits tensor to the host.
pub fn logits_to_vec<B: ModelBackend>(logits: Tensor<B, 2>) -> Result<Vec<f32>> {
    logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Unsupported(format!("reading logits from the device: {e:?}")))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::update::LowRank;
    use super::*;
    use crate::backend::Flex;

    fn last_logits(m: &Model<Flex>, ids: &[u32]) -> Vec<f32> {
        let mut c = m.new_cache(ids.len());
        logits_to_vec(m.forward(ids, &mut c, true).unwrap()).unwrap()
    }

    /// A tied model holds one copy of the embedding (the head's) — so does a LitGPT file whose
    /// head was saved as a view of the embedding's storage; merging an update into the head
    /// first gives the embedding its own copy, so merged equals separate.
    #[test]
    fn tied_head_shares_the_embedding_until_the_head_changes() {
        for (model, tied_in_config) in [("qwen2/hf", true), ("llama32/lit", false)] {
            tied_head_case(model, tied_in_config);
        }
    }

    fn tied_head_case(model: &str, tied_in_config: bool) {
        let dir = format!(
            "{}/tests/fixtures/models/{model}",
            env!("CARGO_MANIFEST_DIR")
        );
        let ck = crate::checkpoint::Checkpoint::open(&dir).unwrap();
        assert_eq!(ck.config.tie_embeddings, tied_in_config, "{model}");
        let mut m = ck.load::<Flex>(&Default::default()).unwrap();
        assert!(m.wte.is_none(), "one copy of a tied embedding ({model})");
        let ids = [1, 5, 9, 2];
        let base = last_logits(&m, &ids);
        let (e, v) = (m.lm_head.in_features(), m.lm_head.out_features());
        let dev = Default::default();
        let a: Vec<f32> = (0..e * 2).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
        let b: Vec<f32> = (0..2 * v).map(|i| ((i % 5) as f32 - 2.0) * 0.05).collect();
        let head = m.linear_mut("lm_head").unwrap();
        head.push_update(LowRank {
            name: "x".into(),
            a: Tensor::from_data(TensorData::new(a, [e, 2]), &dev),
            b: Tensor::from_data(TensorData::new(b, [2, v]), &dev),
            scale: 1.0,
            active: true,
            merged: false,
        });
        assert!(m.wte.is_some(), "the embedding got its own copy");
        let separate = last_logits(&m, &ids);
        assert!(separate
            .iter()
            .zip(&base)
            .any(|(x, y)| (x - y).abs() > 1e-3));
        m.linear_mut("lm_head").unwrap().set_merged("x", true);
        let merged = last_logits(&m, &ids);
        let err = merged
            .iter()
            .zip(&separate)
            .fold(0f32, |d, (x, y)| d.max((x - y).abs()));
        assert!(err < 1e-4, "merged differs from separate by {err}");
    }
}
