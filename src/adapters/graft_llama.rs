//! Grafting a LLaMA-Adapter onto a model: trained norms swapped in, v2 per-output scale/bias on
//! linears (separate, or folded into W and b exactly and restorably), and the gated prefix whose
//! keys and values are computed once through the layer's own q/k/v projection.
//!
//! The prefix keys/values are sliced out of the projection output as LitGPT 0.5's
//! `litgpt/adapter.py` does: the output of each prefix position is viewed as
//! `[n_query_groups, q_per_kv + 2, head_size]` and the last two rows of each group are taken as
//! key and value, repeated for the group's query heads — even though the weights themselves are
//! stored `[Q | K | V]`. Reproducing that arithmetic is what makes the outputs match LitGPT.

use std::sync::Arc;

use burn::prelude::*;

use super::lora::Adapter;
use super::Mode;
use crate::backend::ModelBackend;
use crate::config::LinearId;
use crate::error::{Error, Result};
use crate::model::logits_to_vec;
use crate::model::{GraftInfo, Model, Prefix};

impl<B: ModelBackend> Model<B> {
    pub(super) fn attach_llama(&mut self, adapter: &Adapter, scale: f32, mode: Mode) -> Result<()> {
        if scale != 1.0 {
            return Err(Error::Unsupported(
                "a LLaMA-Adapter has no scale (use 1)".into(),
            ));
        }
        let parts = &adapter.llama;
        // Check everything first.
        self.check_llama(adapter)?;
        let name: Arc<str> = Arc::from(adapter.name.as_str());
        let info = GraftInfo {
            name: adapter.name.clone(),
            source: adapter.path.display().to_string(),
            format: adapter.format,
            step: adapter.step,
            scale: 1.0,
            active: true,
            merged: mode == Mode::Merged,
            linears: parts.affine.keys().cloned().collect(),
            norms: parts.norms.keys().cloned().collect(),
            prefix_layers: parts.prefix.keys().copied().collect(),
        };
        if let Err(e) = self.graft_llama(adapter, &name, mode) {
            // (Only reading the prefix's keys back from the device can fail here: take out
            // whatever went in, so a failed attach leaves the model as it was.)
            self.detach_llama(&info);
            return Err(e);
        }
        self.grafts_mut().push(info);
        Ok(())
    }

    /// Every check of [`Model::attach_llama`], before anything changes: the norms, linears and
    /// layers exist, and every tensor has the shape its place needs.
    fn check_llama(&mut self, adapter: &Adapter) -> Result<()> {
        let parts = &adapter.llama;
        let shape = |name: String, expected: Vec<usize>, found: Vec<usize>| Error::ShapeMismatch {
            path: adapter.path.clone(),
            name,
            expected,
            found,
        };
        for (norm, (w, b)) in &parts.norms {
            let n = self
                .norm_mut(norm)
                .ok_or_else(|| Error::UnexpectedTensors {
                    path: adapter.path.clone(),
                    count: 1,
                    examples: format!("a trained `{norm}`, which this model does not have"),
                })?;
            if n.size() != w.data.len() {
                return Err(shape(
                    format!("{norm}.weight"),
                    vec![n.size()],
                    w.shape.clone(),
                ));
            }
            if let Some(b) = b.as_ref().filter(|b| b.data.len() != n.size()) {
                return Err(shape(
                    format!("{norm}.bias"),
                    vec![n.size()],
                    b.shape.clone(),
                ));
            }
        }
        for (lin, (s, b)) in &parts.affine {
            let l = self
                .linear(lin)
                .ok_or_else(|| Error::invalid("adapter", format!("no linear `{lin}`")))?;
            if l.out_features() != s.len() {
                return Err(shape(
                    format!("{lin}.adapter_scale"),
                    vec![l.out_features()],
                    vec![s.len()],
                ));
            }
            if b.len() != s.len() {
                return Err(shape(
                    format!("{lin}.adapter_bias"),
                    vec![l.out_features()],
                    vec![b.len()],
                ));
            }
        }
        let cfg = self.config();
        for (&i, (wte, gate)) in &parts.prefix {
            if i >= cfg.n_layer {
                return Err(Error::invalid(
                    "adapter",
                    format!("a prefix for layer {i}; the model has {}", cfg.n_layer),
                ));
            }
            let len = wte.shape.first().copied().unwrap_or(0);
            if wte.shape != [len, cfg.n_embd] || wte.data.len() != len * cfg.n_embd {
                return Err(shape(
                    format!("transformer.h.{i}.attn.adapter_wte.weight"),
                    vec![len, cfg.n_embd],
                    wte.shape.clone(),
                ));
            }
            if gate.len() != cfg.n_head {
                return Err(shape(
                    format!("transformer.h.{i}.attn.gating_factor"),
                    vec![1, cfg.n_head, 1, 1],
                    vec![gate.len()],
                ));
            }
        }
        Ok(())
    }

    /// Swaps in the norms, installs the affine corrections and the prefixes (all checked).
    fn graft_llama(&mut self, adapter: &Adapter, name: &Arc<str>, mode: Mode) -> Result<()> {
        let parts = &adapter.llama;
        for (norm, (w, b)) in &parts.norms {
            if let Some(n) = self.norm_mut(norm) {
                n.replace(name, w, b.as_ref());
            }
        }
        for (lin, (s, b)) in &parts.affine {
            if let Some(l) = self.linear_mut(lin) {
                l.set_affine(name.clone(), s.clone(), b.clone());
            }
        }
        let cfg = self.config().clone();
        let (nh, ng, hs) = (cfg.n_head, cfg.n_query_groups, cfg.head_size);
        let q_per_kv = nh / ng;
        let device = self.device().clone();
        for (&i, (wte, gate)) in &parts.prefix {
            let len = wte.shape[0];
            let qkv = self
                .linear_at(LinearId::Qkv(i))
                .ok_or_else(|| Error::invalid("adapter", format!("layer {i} does not exist")))?;
            let x = Tensor::<B, 2>::from_data(
                TensorData::new(wte.data.clone(), [len, cfg.n_embd]),
                &device,
            );
            let out = logits_to_vec(
                qkv.forward(x.unsqueeze_dim::<3>(0))
                    .reshape([len, qkv.out_features()]),
            )?;
            let width = qkv.out_features();
            let mut k = vec![0f32; nh * len * hs];
            let mut v = vec![0f32; nh * len * hs];
            for t in 0..len {
                let row = &out[t * width..(t + 1) * width];
                for h in 0..nh {
                    let g = h / q_per_kv;
                    let base = g * (q_per_kv + 2) * hs;
                    let (ko, vo) = (base + q_per_kv * hs, base + (q_per_kv + 1) * hs);
                    let dst = (h * len + t) * hs;
                    k[dst..dst + hs].copy_from_slice(&row[ko..ko + hs]);
                    v[dst..dst + hs].copy_from_slice(&row[vo..vo + hs]);
                }
            }
            let prefix = Prefix {
                name: name.clone(),
                k: Tensor::from_data(TensorData::new(k, [1, nh, len, hs]), &device),
                v: Tensor::from_data(TensorData::new(v, [1, nh, len, hs]), &device),
                gate: Tensor::from_data(TensorData::new(gate.clone(), [1, nh, 1, 1]), &device),
                active: true,
            };
            if let Some(a) = self.attention_mut(i) {
                a.set_prefix(Some(prefix));
            }
        }
        if mode == Mode::Merged {
            for lin in parts.affine.keys() {
                if let Some(l) = self.linear_mut(lin) {
                    l.set_affine_merged(true);
                }
            }
        }
        Ok(())
    }

    pub(super) fn detach_llama(&mut self, g: &GraftInfo) {
        for lin in &g.linears {
            if let Some(l) = self.linear_mut(lin) {
                l.remove_affine();
            }
        }
        for norm in &g.norms {
            if let Some(n) = self.norm_mut(norm) {
                if !g.active {
                    n.swap(&g.name); // bring the adapter's values back so restore sees them saved
                }
                n.restore(&g.name);
            }
        }
        for &i in &g.prefix_layers {
            if let Some(a) = self.attention_mut(i) {
                a.set_prefix(None);
            }
        }
    }

    pub(super) fn set_llama_active(&mut self, i: usize, active: bool) -> Result<()> {
        let g = self.grafts()[i].clone();
        if g.active == active {
            return Ok(());
        }
        if !active && g.merged {
            self.set_merged(&g.name, false)?;
        }
        for lin in &g.linears {
            if let Some(af) = self.linear_mut(lin).and_then(|l| l.affine_mut()) {
                af.active = active;
            }
        }
        for norm in &g.norms {
            if let Some(n) = self.norm_mut(norm) {
                n.swap(&g.name);
            }
        }
        for &l in &g.prefix_layers {
            if let Some(p) = self.attention_mut(l).and_then(|a| a.prefix_mut()) {
                p.active = active;
            }
        }
        self.grafts_mut()[i].active = active;
        Ok(())
    }
}
