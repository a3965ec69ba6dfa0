//! LoRA on the host: an [`Adapter`] is a set of low-rank updates keyed by the model's internal
//! linear names, each already laid out for the whole linear (`A`: `[R, in]`, `B`: `[out, R]`, scale
//! folded into `B`), so the model side only ever computes `(x·Aᵀ)·Bᵀ`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::discover::AdapterFormat;
use crate::checkpoint::HostTensor;
use crate::error::{Error, Result};

/// One linear's update: `ΔW = B·A` with `A` `[r, in]` and `B` `[out, r]` (scale included).
#[derive(Debug, Clone, PartialEq)]
pub struct LowRankUpdate {
    pub a: HostTensor,
    pub b: HostTensor,
}

impl LowRankUpdate {
    /// Rank.
    pub fn rank(&self) -> usize {
        self.a.shape[0]
    }

    /// Stacks several updates of the same linear along the rank (`ΔW = Σ Bᵢ·Aᵢ`).
    pub fn concat(mut parts: Vec<LowRankUpdate>) -> Option<LowRankUpdate> {
        if parts.len() == 1 {
            return parts.pop(); // already laid out as the stack of one
        }
        let first = parts.first()?;
        let (inp, out) = (first.a.shape[1], first.b.shape[0]);
        let r: usize = parts.iter().map(|p| p.rank()).sum();
        let mut a = Vec::with_capacity(r * inp);
        for p in &parts {
            a.extend_from_slice(&p.a.data);
        }
        // Row `o` of `B` is the parts' rows `o` side by side (written once, no zero-fill first).
        let mut b = Vec::with_capacity(out * r);
        for o in 0..out {
            for p in &parts {
                let pr = p.rank();
                b.extend_from_slice(&p.b.data[o * pr..(o + 1) * pr]);
            }
        }
        Some(LowRankUpdate {
            a: HostTensor {
                shape: vec![r, inp],
                data: a,
            },
            b: HostTensor {
                shape: vec![out, r],
                data: b,
            },
        })
    }

    /// The dense `ΔW` `[out, in]` (for tests and export).
    pub fn dense(&self) -> Vec<f32> {
        let (r, inp, out) = (self.rank(), self.a.shape[1], self.b.shape[0]);
        let mut w = vec![0f32; out * inp];
        for o in 0..out {
            for k in 0..r {
                let bv = self.b.data[o * r + k];
                if bv == 0.0 {
                    continue;
                }
                let arow = &self.a.data[k * inp..(k + 1) * inp];
                for (wi, &av) in w[o * inp..(o + 1) * inp].iter_mut().zip(arow) {
                    *wi += bv * av;
                }
            }
        }
        w
    }
}

/// Places `b` (`[rows, r]`, times `scale`) at output rows `row_offset..` of a zero `[out, r]` matrix.
pub fn place_rows(b: &HostTensor, out: usize, row_offset: usize, scale: f32) -> HostTensor {
    place_rows_of(&b.data, b.shape[1], out, row_offset, scale)
}

/// [`place_rows`] of the rows `b` holds (`[b.len() / r, r]`), borrowed.
pub fn place_rows_of(b: &[f32], r: usize, out: usize, row_offset: usize, scale: f32) -> HostTensor {
    let mut full = vec![0f32; out * r];
    let dst = &mut full[row_offset * r..row_offset * r + b.len()];
    for (d, &x) in dst.iter_mut().zip(b) {
        *d = x * scale;
    }
    HostTensor {
        shape: vec![out, r],
        data: full,
    }
}

/// An adapter read from disk and checked against a base model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// The name it is attached under (defaults to the folder name, plus the step).
    pub name: String,
    pub format: AdapterFormat,
    /// The weights file.
    pub path: PathBuf,
    /// The adapter folder.
    pub dir: PathBuf,
    /// The training step, when known.
    pub step: Option<u64>,
    /// The base model path recorded by the trainer (as written).
    pub recorded_base: Option<String>,
    /// Nominal rank and alpha (per-module values may differ for PEFT patterns).
    pub r: usize,
    pub alpha: f64,
    /// Updates by internal linear name.
    pub updates: BTreeMap<String, LowRankUpdate>,
    /// LLaMA-Adapter parts (empty for LoRA).
    pub llama: LlamaAdapterParts,
}

/// What a LitGPT LLaMA-Adapter (v1/v2) adds: a gated prefix per layer from `start_layer`, and for
/// v2 a per-output scale and bias on linears and trained norms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlamaAdapterParts {
    /// Prefix length (0: no prefix).
    pub prompt_length: usize,
    pub start_layer: usize,
    /// Layer → (prefix embedding `[prompt_length, n_embd]`, gate per head).
    pub prefix: BTreeMap<usize, (HostTensor, Vec<f32>)>,
    /// Internal linear name → (scale `[out]`, bias `[out]`).
    pub affine: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    /// Internal norm name (`transformer.h.0.norm_1`) → (weight, bias).
    pub norms: BTreeMap<String, (HostTensor, Option<HostTensor>)>,
}

impl LlamaAdapterParts {
    /// Whether there is anything.
    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty() && self.affine.is_empty() && self.norms.is_empty()
    }
}

impl Adapter {
    /// Total number of parameters in the stored factors.
    pub fn parameter_count(&self) -> usize {
        self.updates
            .values()
            .map(|u| u.a.data.len() + u.b.data.len())
            .sum()
    }
}

/// Checks a factor's shape, naming the adapter file and tensor.
pub fn expect_shape(
    path: &std::path::Path,
    name: &str,
    found: &[usize],
    expected: &[usize],
) -> Result<()> {
    if found != expected {
        return Err(Error::ShapeMismatch {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: &[f32]) -> HostTensor {
        HostTensor {
            shape: shape.to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn concat_sums_the_updates() {
        let u1 = LowRankUpdate {
            a: t(&[1, 2], &[1.0, 2.0]),
            b: t(&[2, 1], &[1.0, 0.0]),
        };
        let u2 = LowRankUpdate {
            a: t(&[1, 2], &[3.0, 4.0]),
            b: t(&[2, 1], &[0.0, 2.0]),
        };
        let both = LowRankUpdate::concat(vec![u1.clone(), u2.clone()]).unwrap();
        let sum: Vec<f32> = u1
            .dense()
            .iter()
            .zip(u2.dense())
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(both.dense(), sum);
        assert_eq!(both.dense(), vec![1.0, 2.0, 6.0, 8.0]);
        let one = LowRankUpdate::concat(vec![u2.clone()]).unwrap();
        assert_eq!((one.a.data, one.b.data), (u2.a.data, u2.b.data));
        assert!(LowRankUpdate::concat(Vec::new()).is_none());
    }

    #[test]
    fn place_rows_scales_and_offsets() {
        let b = t(&[1, 2], &[1.0, 2.0]);
        let p = place_rows(&b, 3, 1, 0.5);
        assert_eq!(p.data, vec![0.0, 0.0, 0.5, 1.0, 0.0, 0.0]);
    }
}

/// How [`combine`] forms a new adapter from several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Stack the ranks: `ΔW = Σ wᵢ·ΔWᵢ` exactly (PEFT `cat`).
    Cat,
    /// Same rank required: `A = Σ √wᵢ·Aᵢ`, `B = Σ √wᵢ·Bᵢ` (PEFT `linear`, scales folded into `B`;
    /// not the weighted sum unless the adapters are similar).
    Linear,
}

/// A new adapter from `parts` with weights (PEFT's `add_weighted_adapter`).
pub fn combine(parts: &[(&Adapter, f32)], how: Combine, name: &str) -> Result<Adapter> {
    let Some((first, _)) = parts.first() else {
        return Err(Error::invalid("adapters", "nothing to combine"));
    };
    let mut linears: Vec<&String> = parts.iter().flat_map(|(a, _)| a.updates.keys()).collect();
    linears.sort();
    linears.dedup();
    let mut updates = BTreeMap::new();
    for lin in linears {
        let present: Vec<(&LowRankUpdate, f32)> = parts
            .iter()
            .filter_map(|(a, w)| a.updates.get(lin).map(|u| (u, *w)))
            .collect();
        let u = match how {
            Combine::Cat => {
                let scaled = present
                    .iter()
                    .map(|(u, w)| LowRankUpdate {
                        a: u.a.clone(),
                        b: HostTensor {
                            shape: u.b.shape.clone(),
                            data: u.b.data.iter().map(|x| x * w).collect(),
                        },
                    })
                    .collect();
                LowRankUpdate::concat(scaled)
            }
            Combine::Linear => {
                let r = present[0].0.rank();
                if present.len() != parts.len() || present.iter().any(|(u, _)| u.rank() != r) {
                    return Err(Error::invalid(
                        "adapters",
                        format!("`linear` needs every adapter to adapt `{lin}` with the same rank"),
                    ));
                }
                let mut a = vec![0f32; present[0].0.a.data.len()];
                let mut b = vec![0f32; present[0].0.b.data.len()];
                for (u, w) in &present {
                    if *w < 0.0 {
                        return Err(Error::invalid(
                            "weights",
                            "`linear` needs non-negative weights",
                        ));
                    }
                    let s = w.sqrt();
                    a.iter_mut().zip(&u.a.data).for_each(|(x, y)| *x += s * y);
                    b.iter_mut().zip(&u.b.data).for_each(|(x, y)| *x += s * y);
                }
                Some(LowRankUpdate {
                    a: HostTensor {
                        shape: present[0].0.a.shape.clone(),
                        data: a,
                    },
                    b: HostTensor {
                        shape: present[0].0.b.shape.clone(),
                        data: b,
                    },
                })
            }
        };
        if let Some(u) = u {
            updates.insert(lin.clone(), u);
        }
    }
    Ok(Adapter {
        name: name.to_string(),
        format: first.format,
        path: first.path.clone(),
        dir: first.dir.clone(),
        step: None,
        recorded_base: first.recorded_base.clone(),
        r: updates.values().map(LowRankUpdate::rank).max().unwrap_or(0),
        alpha: first.alpha,
        updates,
        llama: LlamaAdapterParts::default(),
    })
}
