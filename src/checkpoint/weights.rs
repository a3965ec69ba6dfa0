//! Readers for weight files: safetensors (single or sharded) and PyTorch `.pth` (LitGPT's
//! `lit_model.pth`). Both present the same view: tensor names with dtype and shape, and each
//! tensor on demand as `f32` values. Bytes are read with positioned reads into graftlm's own
//! buffers ([`crate::file::Positioned`]), never mapped, so a file changed underneath a load is an
//! error, not a crash, and the finiteness check sees the bytes that are used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use safetensors::tensor::Metadata;
use safetensors::Dtype;

use super::pth::PthFile;
use super::tensor::{decode, PIECE};
pub use super::tensor::{HostTensor, TensorMeta, Values};
use crate::error::{Error, Result};
use crate::file::Positioned;

struct Shard {
    path: PathBuf,
    file: Positioned,
    data_start: u64,
}

/// Where one safetensors tensor lives: shard index, dtype, shape, byte range in the data section.
type Located = (usize, Dtype, Vec<usize>, (usize, usize));

enum Backing {
    Safetensors {
        shards: Vec<Shard>,
        // name -> (shard index, dtype, shape, byte range within the data section)
        index: HashMap<String, Located>,
    },
    Pth {
        file: PthFile,
        prefix: String,
    },
}

mod in_place;

/// The weight files of one checkpoint.
pub struct WeightFiles {
    /// The file (or index file) the weights were opened from; used in error messages.
    pub path: PathBuf,
    backing: Backing,
    meta: BTreeMap<String, TensorMeta>,
    /// Buffers tensors are read into for the in-place path, reused from one tensor to the next
    /// (fresh pages for every tensor would be cleared by the kernel each time).
    scratch: Mutex<Vec<Vec<u32>>>,
}

impl std::fmt::Debug for WeightFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFiles")
            .field("path", &self.path)
            .field("tensors", &self.meta.len())
            .finish()
    }
}

fn catch<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::parse(
            path,
            format!("{what}: the reader panicked (corrupt file?)"),
        ))
    })
}

impl WeightFiles {
    /// Finds and opens the weights in a checkpoint directory: `lit_model.pth`,
    /// `model.safetensors.index.json` (sharded) or `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let candidates = [
            "lit_model.pth",
            "model.safetensors.index.json",
            "model.safetensors",
        ];
        for c in candidates {
            let p = dir.join(c);
            // Present in any form: a FIFO or directory there is refused by name when opened.
            if p.exists() {
                return Self::open(&p);
            }
        }
        Err(Error::NotFound {
            path: dir.to_path_buf(),
            what: format!("weights (looked for {})", candidates.join(", ")),
        })
    }

    /// Opens one weight file (`.pth`, `.safetensors`, or a `.safetensors.index.json`).
    pub fn open(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".index.json") {
            Self::open_sharded(path)
        } else if name.ends_with(".safetensors") {
            Self::open_safetensors(path, &[path.to_path_buf()])
        } else {
            Self::open_pth(path)
        }
    }

    fn open_sharded(index_path: &Path) -> Result<Self> {
        let text = crate::file::read_to_string(index_path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::parse(index_path, e))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::parse(index_path, "no `weight_map` object"))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::parse(
                    index_path,
                    format!("weight_map[{tensor:?}] is not a file name"),
                )
            })?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(Error::parse(
                    index_path,
                    format!("shard name {file:?} leaves the directory"),
                ));
            }
            let p = dir.join(file);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        files.sort();
        let mut wf = Self::open_safetensors(index_path, &files)?;
        // Every tensor named in the index must be in the shard it names.
        for (tensor, file) in map {
            let Some(Backing::Safetensors { shards, index }) = Some(&wf.backing) else {
                break;
            };
            let found = index.get(tensor).map(|(i, ..)| shards[*i].path.file_name());
            let expected = file.as_str().map(std::ffi::OsStr::new);
            if found.flatten() != expected {
                return Err(Error::parse(
                    index_path,
                    format!("tensor `{tensor}` is listed in {file} but not stored there"),
                ));
            }
        }
        wf.path = index_path.to_path_buf();
        Ok(wf)
    }

    fn open_safetensors(path: &Path, files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        let mut meta = BTreeMap::new();
        for (si, file) in files.iter().enumerate() {
            let f = Positioned::open(file, "safetensors file")?;
            let (data_start, md) = read_header(&f)?;
            for (name, info) in md.tensors() {
                if index.contains_key(&name) {
                    return Err(Error::parse(
                        file,
                        format!("tensor `{name}` is stored twice"),
                    ));
                }
                meta.insert(
                    name.clone(),
                    TensorMeta {
                        dtype: format!("{:?}", info.dtype),
                        shape: info.shape.clone(),
                    },
                );
                index.insert(
                    name,
                    (si, info.dtype, info.shape.clone(), info.data_offsets),
                );
            }
            shards.push(Shard {
                path: file.clone(),
                file: f,
                data_start,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            backing: Backing::Safetensors { shards, index },
            meta,
            scratch: Mutex::default(),
        })
    }

    fn open_pth(path: &Path) -> Result<Self> {
        let file = catch(path, "reading the PyTorch checkpoint", || {
            PthFile::open(path)
        })?;
        // LitGPT training checkpoints nest the state dict under "model".
        let names: Vec<&String> = file.metas().map(|(n, ..)| n).collect();
        let nested = !names.is_empty()
            && names.iter().all(|k| k.starts_with("model."))
            && names
                .iter()
                .any(|k| k.starts_with("model.transformer.") || k.starts_with("model.lm_head."));
        let prefix = if nested {
            "model.".to_string()
        } else {
            String::new()
        };
        let mut meta = BTreeMap::new();
        for (k, dtype, shape) in file.metas() {
            let Some(name) = k.strip_prefix(&prefix) else {
                continue;
            };
            meta.insert(
                name.to_string(),
                TensorMeta {
                    dtype: dtype.to_string(),
                    shape: shape.clone(),
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            backing: Backing::Pth { file, prefix },
            meta,
            scratch: Mutex::default(),
        })
    }

    /// All stored tensors with their dtype and shape, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorMeta> {
        &self.meta
    }

    /// The file that holds `name` (the shard, for sharded safetensors).
    pub fn file_of(&self, name: &str) -> PathBuf {
        match &self.backing {
            Backing::Safetensors { shards, index } => index
                .get(name)
                .map(|(i, ..)| shards[*i].path.clone())
                .unwrap_or_else(|| self.path.clone()),
            Backing::Pth { .. } => self.path.clone(),
        }
    }

    /// Reads tensor `name` as `f32` (f16 and bf16 are widened exactly). NaN or infinite values
    /// are refused: they would silently turn every output into NaN.
    pub fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let t = self.read_raw(name)?;
        self.check_finite(name, Values::F32(&t.data))?;
        Ok(t)
    }

    /// Refuses NaN or infinite values (of any stored float type), naming the first.
    fn check_finite(&self, name: &str, values: Values<'_>) -> Result<()> {
        let bad = match values {
            Values::F32(d) => first_non_finite(d).map(|i| (i, d[i])),
            Values::Bf16(d) => first_all_ones(bytemuck::cast_slice::<_, u16>(d), 0x7f80)
                .map(|i| (i, d[i].to_f32())),
            Values::F16(d) => first_all_ones(bytemuck::cast_slice::<_, u16>(d), 0x7c00)
                .map(|i| (i, d[i].to_f32())),
        };
        match bad {
            None => Ok(()),
            Some((i, v)) => Err(Error::BadTensor {
                path: self.file_of(name),
                name: name.to_string(),
                msg: format!("holds a non-finite value ({v}) at element {i}; refusing to load it"),
            }),
        }
    }

    fn read_raw(&self, name: &str) -> Result<HostTensor> {
        let missing = || Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            expected: vec![],
        };
        match &self.backing {
            Backing::Safetensors { shards, index } => {
                let (si, dtype, shape, (start, end)) = index.get(name).ok_or_else(missing)?;
                let shard = &shards[*si];
                let (a, b) = (
                    shard.data_start + *start as u64,
                    shard.data_start + *end as u64,
                );
                let bytes = shard.file.read_vec(a, b)?;
                let data = decode(&bytes, *dtype).map_err(|msg| Error::BadTensor {
                    path: shard.path.clone(),
                    name: name.to_string(),
                    msg,
                })?;
                Ok(HostTensor {
                    shape: shape.clone(),
                    data,
                })
            }
            Backing::Pth { file, prefix } => {
                let shape = self.meta.get(name).ok_or_else(missing)?.shape.clone();
                let data = catch(&self.path, name, || {
                    file.read_f32(&format!("{prefix}{name}"))
                })?;
                Ok(HostTensor { shape, data })
            }
        }
    }
}

/// The header of a safetensors file: where its data section starts and the tensors it
/// describes, checked as `SafeTensors::read_metadata` checks them (offsets contiguous and
/// matching the shapes, the data section ending exactly at the end of the file) without reading
/// the data.
fn read_header(f: &Positioned) -> Result<(u64, Metadata)> {
    let bad = |msg: String| Error::parse(f.path(), format!("invalid safetensors file: {msg}"));
    if f.len() < 8 {
        return Err(bad("header too small".into()));
    }
    let mut n = [0u8; 8];
    f.read_exact_at(&mut n, 0)?;
    let n = u64::from_le_bytes(n);
    // The limit the safetensors crate sets on headers.
    if n > 100_000_000 || 8 + n > f.len() {
        return Err(bad(format!("header of {n} bytes is too large")));
    }
    let header = f.read_vec(8, 8 + n)?;
    let md: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let end = (8 + n).checked_add(md.data_len() as u64);
    if end != Some(f.len()) {
        return Err(bad(format!(
            "the header describes {} bytes of data but the file holds {}",
            md.data_len(),
            f.len() - 8 - n
        )));
    }
    Ok((8 + n, md))
}

/// Index of the first NaN or infinity.
fn first_non_finite(d: &[f32]) -> Option<usize> {
    let bits: &[u32] = bytemuck::cast_slice(d);
    first_all_ones(bits, 0x7f80_0000)
}

/// Index of the first element whose `exponent` bits are all set (infinity or NaN in that
/// floating-point format), scanning in blocks with a branch-free test that the compiler
/// vectorises (this runs over every weight at load time; large tensors in parallel).
fn first_all_ones<T>(d: &[T], exponent: T) -> Option<usize>
where
    T: Copy + Sync + PartialEq + std::ops::BitAnd<Output = T>,
{
    let bad = |x: &T| *x & exponent == exponent;
    let any_bad = |chunk: &[T]| chunk.iter().fold(false, |a, x| a | bad(x));
    const BLOCK: usize = 4096;
    if d.len() > PIECE {
        use rayon::prelude::*;
        let piece = d.par_chunks(PIECE).position_first(any_bad)?;
        let at = piece * PIECE;
        return first_all_ones(&d[at..(at + PIECE).min(d.len())], exponent).map(|i| at + i);
    }
    d.chunks(BLOCK).enumerate().find_map(|(b, chunk)| {
        any_bad(chunk).then(|| b * BLOCK + chunk.iter().position(bad).unwrap_or(0))
    })
}

#[cfg(test)]
mod scan_tests;
