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
    pub fn concat(parts: Vec<LowRankUpdate>) -> Option<LowRankUpdate> {
        let first = parts.first()?;
        let (inp, out) = (first.a.shape[1], first.b.shape[0]);
        let r: usize = parts.iter().map(|p| p.rank()).sum();
        let mut a = Vec::with_capacity(r * inp);
        let mut b = vec![0f32; out * r];
        let mut col = 0;
        for p in &parts {
            a.extend_from_slice(&p.a.data);
            let pr = p.rank();
            for o in 0..out {
                b[o * r + col..o * r + col + pr].copy_from_slice(&p.b.data[o * pr..(o + 1) * pr]);
            }
            col += pr;
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
    let (rows, r) = (b.shape[0], b.shape[1]);
    let mut full = vec![0f32; out * r];
    for i in 0..rows {
        for k in 0..r {
            full[(row_offset + i) * r + k] = b.data[i * r + k] * scale;
        }
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
    }

    #[test]
    fn place_rows_scales_and_offsets() {
        let b = t(&[1, 2], &[1.0, 2.0]);
        let p = place_rows(&b, 3, 1, 0.5);
        assert_eq!(p.data, vec![0.0, 0.0, 0.5, 1.0, 0.0, 0.0]);
    }
}
