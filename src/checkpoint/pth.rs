//! PyTorch `.pth` checkpoints (the zip format of `torch.save` and LitGPT's `incremental_save`):
//! the zip's directory is read from the file, `data.pkl` is parsed by [`super::pickle`], and each
//! tensor is read from its storage record (positioned reads, [`crate::file::Positioned`]) with its
//! offset and strides checked against the record's size. Contiguous f32/bf16/f16 tensors are
//! located as one byte range ([`PthFile::contiguous_range`]) for the in-place path.

use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::pickle::{self, TensorRef};
use super::tensor::{decode, Values};
use crate::error::{Error, Result};
use crate::file::Positioned;

/// An opened `.pth` file.
pub struct PthFile {
    path: PathBuf,
    pub(crate) file: Positioned,
    /// zip entry name → byte range in the file (entries are stored uncompressed).
    records: HashMap<String, (u64, u64)>,
    /// Folder prefix of the records inside the zip (`archive/`, `lit_model/`, ...).
    prefix: String,
    tensors: BTreeMap<String, TensorRef>,
}

/// Element width and dtype name for a PyTorch storage type.
fn storage_dtype(storage_type: &str) -> Option<(usize, &'static str)> {
    Some(match storage_type {
        "FloatStorage" => (4, "F32"),
        "HalfStorage" => (2, "F16"),
        "BFloat16Storage" => (2, "BF16"),
        "DoubleStorage" => (8, "F64"),
        _ => return None,
    })
}

/// The stored element type of a tensor that can be lent as [`Values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lendable {
    F32,
    Bf16,
    F16,
}

impl Lendable {
    /// `bytes` (aligned for the type, a whole number of values) as values.
    pub fn view(self, bytes: &[u8]) -> Option<Values<'_>> {
        Some(match self {
            Lendable::F32 => Values::F32(bytemuck::try_cast_slice(bytes).ok()?),
            Lendable::Bf16 => Values::Bf16(bytemuck::try_cast_slice(bytes).ok()?),
            Lendable::F16 => Values::F16(bytemuck::try_cast_slice(bytes).ok()?),
        })
    }
}

impl PthFile {
    /// Opens and indexes `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::parse(path, format!("invalid PyTorch checkpoint: {msg}"));
        let file = Positioned::open(path, "PyTorch checkpoint")?;
        let len = file.len();
        if len >= 2 && file.read_vec(0, 1)?[0] == 0x80 {
            return Err(bad(
                "this is a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch".into(),
            ));
        }
        let reader = BufReader::new(file.try_clone()?);
        let mut zip =
            zip::ZipArchive::new(reader).map_err(|e| bad(format!("not a zip archive: {e}")))?;
        let mut records = HashMap::new();
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|e| bad(format!("zip entry {i}: {e}")))?;
            let name = entry.name().to_string();
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(bad(format!(
                    "zip entry {name} is compressed; torch.save never compresses"
                )));
            }
            let start = entry
                .data_start()
                .ok_or_else(|| bad(format!("zip entry {name} has no data offset")))?;
            let end = start.checked_add(entry.size()).filter(|&e| e <= len);
            let Some(end) = end else {
                return Err(bad(format!(
                    "zip entry {name} extends past the end of the file"
                )));
            };
            records.insert(name, (start, end));
        }
        let pkl = records
            .keys()
            .filter(|k| k.ends_with("data.pkl"))
            .min_by_key(|k| k.len())
            .cloned()
            .ok_or_else(|| bad("no data.pkl in the archive".into()))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        if let Some(&(s, e)) = records.get(&format!("{prefix}byteorder")) {
            if e - s > 16 || file.read_vec(s, e)? != b"little" {
                return Err(bad("big-endian checkpoints are not supported".into()));
            }
        }
        let (s, e) = records[&pkl];
        // A state dict's pickle is kilobytes to a few MB (the tensors live in other records);
        // the parser's work budget would refuse a much larger one anyway, so it is not read.
        if e - s > 64 << 20 {
            return Err(bad(format!(
                "data.pkl is {} bytes, far more than any state dict's",
                e - s
            )));
        }
        let list =
            pickle::tensors(&file.read_vec(s, e)?).map_err(|m| bad(format!("data.pkl: {m}")))?;
        let mut tensors = BTreeMap::new();
        for (name, t) in list {
            tensors.insert(name, t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records,
            prefix,
            tensors,
        })
    }

    /// Tensor names with their dtype name and shape.
    pub fn metas(&self) -> impl Iterator<Item = (&String, &'static str, &Vec<usize>)> {
        self.tensors.iter().map(|(n, t)| {
            let dtype = storage_dtype(&t.storage_type)
                .map(|d| d.1)
                .unwrap_or("unsupported");
            (n, dtype, &t.shape)
        })
    }

    /// Where tensor `name`'s values lie in the file, with their type and its shape — when it is
    /// a contiguous little-endian f32, bf16 or f16 tensor inside its record; `None` otherwise
    /// (then [`PthFile::read_f32`] reads it).
    pub(crate) fn contiguous_range(
        &self,
        name: &str,
    ) -> Option<(Lendable, &[usize], std::ops::Range<u64>)> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let t = self.tensors.get(name)?;
        let (width, _) = storage_dtype(&t.storage_type)?;
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0)?;
        if t.shape.len() != t.stride.len() || !contiguous(&t.shape, &t.stride) {
            return None;
        }
        let &(s, e) = self
            .records
            .get(&format!("{}data/{}", self.prefix, t.key))?;
        let a = (t.offset.checked_mul(width)? as u64).checked_add(s)?;
        let b = (numel.checked_mul(width)? as u64).checked_add(a)?;
        if b > e {
            return None;
        }
        let kind = match t.storage_type.as_str() {
            "FloatStorage" => Lendable::F32,
            "BFloat16Storage" => Lendable::Bf16,
            "HalfStorage" => Lendable::F16,
            _ => return None,
        };
        Some((kind, &t.shape, a..b))
    }

    /// Whether tensors `a` and `b` are the same view of the same storage (tied weights saved
    /// once by `torch.save`).
    pub(crate) fn same_view(&self, a: &str, b: &str) -> bool {
        match (self.tensors.get(a), self.tensors.get(b)) {
            (Some(x), Some(y)) => {
                x.key == y.key
                    && x.storage_type == y.storage_type
                    && x.offset == y.offset
                    && x.shape == y.shape
                    && x.stride == y.stride
            }
            _ => false,
        }
    }

    /// Reads tensor `name` as `f32`, following its offset and strides.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let bad = |msg: String| Error::BadTensor {
            path: self.path.clone(),
            name: name.to_string(),
            msg,
        };
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            expected: vec![],
        })?;
        let (width, _) = storage_dtype(&t.storage_type).ok_or_else(|| {
            bad(format!(
                "storage type {} is not supported (use f32, f16 or bf16)",
                t.storage_type
            ))
        })?;
        let record = format!("{}data/{}", self.prefix, t.key);
        let &(s, e) = self.records.get(&record).ok_or_else(|| {
            bad(format!(
                "storage record {record} is missing from the archive"
            ))
        })?;
        let numel_storage = ((e - s) / width as u64) as usize;
        let numel: usize = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("shape overflows".into()))?;
        if numel == 0 {
            return Ok(Vec::new());
        }
        // Highest element index touched must lie inside the storage.
        let mut last = t.offset;
        for (&d, &st) in t.shape.iter().zip(&t.stride) {
            last = (d - 1)
                .checked_mul(st)
                .and_then(|x| last.checked_add(x))
                .ok_or_else(|| bad("strides overflow".into()))?;
        }
        if last >= numel_storage {
            return Err(bad(format!(
                "needs element {last} but its storage holds {numel_storage} (truncated file?)"
            )));
        }
        // A view with more elements than its storage repeats values (`expand`): never a
        // parameter, and it would let a small file ask for any amount of memory.
        if numel > numel_storage {
            return Err(bad(format!(
                "a view of {numel} elements over a storage of {numel_storage}"
            )));
        }
        // Only the span of the storage the view touches is read.
        let first = s + (t.offset * width) as u64;
        let bytes = self.file.read_vec(first, s + ((last + 1) * width) as u64)?;
        if contiguous(&t.shape, &t.stride) {
            // One run of the storage: converted in bulk (in parallel when large).
            let dtype = match t.storage_type.as_str() {
                "FloatStorage" => safetensors::Dtype::F32,
                "HalfStorage" => safetensors::Dtype::F16,
                "BFloat16Storage" => safetensors::Dtype::BF16,
                _ => safetensors::Dtype::F64,
            };
            return decode(&bytes[..numel * width], dtype).map_err(bad);
        }
        let convert: fn(&[u8]) -> f32 = match t.storage_type.as_str() {
            "FloatStorage" => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            "HalfStorage" => |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            "BFloat16Storage" => |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => |b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        };
        let get = |i: usize| -> f32 { convert(&bytes[(i - t.offset) * width..][..width]) };
        // A strided view: element by element.
        let mut out = Vec::with_capacity(numel);
        let rank = t.shape.len();
        let mut idx = vec![0usize; rank];
        for _ in 0..numel {
            let lin = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.push(get(lin));
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

/// Whether `stride` is the row-major stride of `shape` (dimensions of size 1 may have any).
fn contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &st) in shape.iter().zip(stride).rev() {
        if d != 1 && st != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tensor of LitGPT's files lies in one contiguous range, whose bytes are the values the
    /// reader gives.
    #[test]
    fn tensors_are_lent_with_the_values_read_f32_copies() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
        for model in ["llama", "llama32", "phi3"] {
            let f = PthFile::open(&root.join(model).join("lit/lit_model.pth")).unwrap();
            let names: Vec<String> = f.metas().map(|(n, ..)| n.clone()).collect();
            assert!(!names.is_empty());
            for name in &names {
                let (kind, shape, range) = f.contiguous_range(name).expect(name);
                let bytes = f.file.read_vec(range.start, range.end).unwrap();
                let words: Vec<u32> = bytes
                    .chunks(4)
                    .map(|c| c.iter().rev().fold(0, |a, &b| (a << 8) | b as u32))
                    .collect();
                let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
                let wide = kind.view(aligned).unwrap().to_f32_vec();
                assert_eq!(
                    shape.iter().product::<usize>(),
                    wide.len(),
                    "{model} {name}"
                );
                assert_eq!(wide, f.read_f32(name).unwrap(), "{model} {name}");
            }
            assert!(f.contiguous_range("no.such.tensor").is_none());
        }
    }

    #[test]
    fn row_major_strides_are_contiguous_and_others_are_not() {
        assert!(contiguous(&[3, 4], &[4, 1]));
        assert!(contiguous(&[1, 4], &[99, 1]));
        assert!(contiguous(&[], &[]));
        assert!(!contiguous(&[3, 4], &[1, 3])); // a transposed view
        assert!(!contiguous(&[3, 4], &[8, 1])); // every other row
    }
}
