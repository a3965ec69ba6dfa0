//! Building a [`Model`] from its parameters, one tensor at a time.

use std::collections::HashMap;

use super::{precision, Block, Embedding, InPlace, Linear, Model, Norm, Rope, WeightDtype};
use crate::backend::ModelBackend;
use crate::checkpoint::names::{Part, LITGPT};
use crate::checkpoint::HostTensor;
use crate::config::{LinearId, ModelConfig};
use crate::error::{Error, Result};

impl<B: ModelBackend> Model<B> {
    /// Builds the model from host tensors named as in LitGPT (see `checkpoint::names::table`).
    pub fn from_tensors(
        config: ModelConfig,
        mut t: HashMap<String, HostTensor>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source(
            config,
            &mut |name: &str| {
                t.remove(name).ok_or_else(|| Error::MissingTensor {
                    path: Default::default(),
                    name: name.to_string(),
                    expected: vec![],
                })
            },
            device,
        )
    }

    /// Builds the model asking `take` for each parameter (LitGPT names) in turn, so a loader can
    /// read one tensor at a time and peak memory stays near the model's own size. Weights are
    /// held as f32 (see [`Model::from_source_as`]).
    pub fn from_source(
        config: ModelConfig,
        take: &mut dyn FnMut(&str) -> Result<HostTensor>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_as(config, take, WeightDtype::F32, device)
    }

    /// [`Model::from_source`] holding the weight matrices (linears and embedding) at `precision`
    /// (`Auto` counts as f32 here: the loader resolves it from the stored dtypes).
    pub fn from_source_as(
        config: ModelConfig,
        take: &mut dyn FnMut(&str) -> Result<HostTensor>,
        precision: WeightDtype,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_source_tied(
            config,
            take,
            &mut |_, _| Ok(false),
            precision,
            false,
            device,
        )
    }

    /// [`Model::from_source_as`] knowing whether `lm_head.weight` comes from the embedding's own
    /// stored values (a tied checkpoint without a separate head, or a head saved as a view of
    /// the embedding's storage): then the embedding is not read again, nor compared with the
    /// head, and the head's copy serves the lookups.
    ///
    /// `in_place(name, f)` may instead call `f(parts, shape)` with a matrix read in place (from
    /// a mapped file) and return `true`; the linears' weights and an untied embedding are asked
    /// for that way first.
    pub(crate) fn from_source_tied(
        config: ModelConfig,
        take: &mut dyn FnMut(&str) -> Result<HostTensor>,
        in_place: &mut InPlace<'_>,
        precision: WeightDtype,
        head_is_embedding: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let precision = match precision {
            WeightDtype::Auto => WeightDtype::F32,
            p => p,
        };
        let cfg = &config;
        // A caller's own configuration and tensors (`from_tensors`, `from_source`) get the checks
        // a checkpoint's get when it is read.
        cfg.validate(std::path::Path::new("(the ModelConfig given)"))?;
        let shapes = crate::checkpoint::names::table_in(cfg, &LITGPT)?
            .into_iter()
            .map(|e| (e.name, e.shape))
            .collect();
        let mut ld = Loader {
            cfg,
            shapes,
            take,
            in_place,
            precision,
            device,
        };
        let wte_shape = [cfg.padded_vocab_size, cfg.n_embd];
        let mut lent = None;
        if !head_is_embedding && !cfg.tie_embeddings {
            // Untied: the embedding is held as read, lent in place (a 16-bit one is not widened
            // to f32 on the way: for a large vocabulary that copy is the biggest transient).
            (ld.in_place)("transformer.wte.weight", &mut |parts, shape| {
                if let ([values], true) = (parts, shape == wte_shape) {
                    lent = Some(precision::held_values::<B>(
                        *values, wte_shape, precision, device,
                    ));
                }
            })?;
        }

        // The head, then (unless lent above, untied) the embedding: with tied embeddings they are
        // normally the same matrix, and the head's (transposed) copy then serves the lookups too
        // — one copy held, not two. (Before the blocks, and one f32 copy at a time, so the
        // transient copies stay below the final size; the comparison reads the head as held.)
        let lm_head = ld.linear(LinearId::Head, cfg.lm_head_bias)?;
        let head_shape = {
            let (inp, out) = (lm_head.in_features(), lm_head.out_features());
            vec![out, inp]
        };
        let wte = if head_is_embedding {
            None
        } else if lent.is_some() {
            lent.map(Embedding::Own)
        } else {
            let wte_h = ld.take("transformer.wte.weight")?;
            let same_as_head = cfg.tie_embeddings && wte_h.shape == head_shape && {
                let (held, shape) = lm_head.held_weight();
                precision::equals_transposed(held, shape, &wte_h.data, precision)
            };
            (!same_as_head).then(|| {
                Embedding::Own(precision::held_tensor::<B>(
                    wte_h.data, wte_shape, precision, device,
                ))
            })
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(&mut ld, i))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = ld.norm(Part::FinalNorm, 0)?;
        let rope = Rope::new(cfg, cfg.block_size, device);
        Ok(Self {
            config,
            grafts: Vec::new(),
            wte,
            blocks,
            ln_f,
            lm_head,
            rope,
            device: device.clone(),
            precision,
        })
    }
}

/// What the model's parts load themselves from (each part's `load` beside its `forward`): the
/// configuration, and the parameters by LitGPT name, one tensor at a time or lent in place,
/// held at `precision` on `device`.
pub(crate) struct Loader<'a, 'p, B: ModelBackend> {
    pub(crate) cfg: &'a ModelConfig,
    /// Every parameter's internal name and shape.
    shapes: HashMap<String, Vec<usize>>,
    take: &'a mut dyn FnMut(&str) -> Result<HostTensor>,
    in_place: &'a mut InPlace<'p>,
    precision: WeightDtype,
    device: &'a B::Device,
}

impl<B: ModelBackend> Loader<'_, '_, B> {
    /// The parameter called `name`, with the shape the configuration gives it and as many
    /// values as that shape holds.
    pub(crate) fn take(&mut self, name: &str) -> Result<HostTensor> {
        let t = (self.take)(name)?;
        let expected = self.shapes.get(name).cloned().unwrap_or_default();
        if t.shape != expected {
            return Err(Error::ShapeMismatch {
                path: Default::default(),
                name: name.to_string(),
                expected,
                found: t.shape,
            });
        }
        if t.data.len() != expected.iter().product::<usize>() {
            return Err(Error::invalid(
                name,
                format!("{} values for the shape {expected:?}", t.data.len()),
            ));
        }
        Ok(t)
    }

    /// The linear `id` (and its bias when `bias`): its weight lent in place where the source
    /// can, else read.
    pub(crate) fn linear(&mut self, id: LinearId, bias: bool) -> Result<Linear<B>> {
        let prefix = id.to_string();
        let b = if bias {
            Some(self.take(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        let name = format!("{prefix}.weight");
        let (precision, device) = (self.precision, self.device);
        let mut made = None;
        let read = (self.in_place)(&name, &mut |data, shape| {
            made = Some(Linear::from_values(
                data,
                shape,
                b.as_ref(),
                precision,
                device,
            ));
        })?;
        match made {
            Some(l) if read => Ok(l),
            _ => Linear::from_host(&self.take(&name)?, b.as_ref(), precision, device),
        }
    }

    /// [`Loader::norm`] where the config has the norm (`has`), else `None`.
    pub(crate) fn norm_if(
        &mut self,
        has: bool,
        part: Part,
        layer: usize,
    ) -> Result<Option<Norm<B>>> {
        if has {
            Ok(Some(self.norm(part, layer)?))
        } else {
            Ok(None)
        }
    }

    /// The norm `part` (of block `layer`), named as the internal table names it: its weight, and
    /// its bias for a LayerNorm.
    pub(crate) fn norm(&mut self, part: Part, layer: usize) -> Result<Norm<B>> {
        let cfg = self.cfg;
        let prefix = LITGPT.name(part, layer).ok_or_else(|| {
            Error::Unsupported(format!("a {part:?} norm (not a part the model has)"))
        })?;
        let w = self.take(&format!("{prefix}.weight"))?;
        let b = if cfg.norm == crate::config::NormKind::LayerNorm {
            Some(self.take(&format!("{prefix}.bias"))?)
        } else {
            None
        };
        Norm::from_host(cfg.norm, &w, b.as_ref(), cfg.norm_eps, self.device)
    }
}
