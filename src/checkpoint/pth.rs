//! PyTorch `.pth` checkpoints (the zip format of `torch.save` and LitGPT's `incremental_save`):
//! the zip is memory-mapped, `data.pkl` is parsed by [`super::pickle`], and each tensor is read from
//! its storage record with its offset and strides checked against the record's size. Contiguous
//! f32/bf16/f16 tensors can also be lent in place from the map ([`PthFile::lend`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::pickle::{self, TensorRef};
use crate::error::{Error, Result};

/// An opened `.pth` file.
pub struct PthFile {
    path: PathBuf,
    mmap: Mmap,
    /// zip entry name → byte range in the file (entries are stored uncompressed).
    records: HashMap<String, (usize, usize)>,
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

impl PthFile {
    /// Opens and indexes `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::parse(path, format!("invalid PyTorch checkpoint: {msg}"));
        let f = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
                what: "PyTorch checkpoint".into(),
            },
            _ => Error::io(path, e),
        })?;
        // SAFETY: read-only map; ranges are checked against its length before use.
        let mmap = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
        if mmap.len() >= 2 && mmap[0] == 0x80 {
            return Err(bad(
                "this is a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch".into(),
            ));
        }
        let mut zip = zip::ZipArchive::new(Cursor::new(&mmap[..]))
            .map_err(|e| bad(format!("not a zip archive: {e}")))?;
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
                .ok_or_else(|| bad(format!("zip entry {name} has no data offset")))?
                as usize;
            let len = entry.size() as usize;
            let end = start.checked_add(len).filter(|&e| e <= mmap.len());
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
            if &mmap[s..e] != b"little" {
                return Err(bad("big-endian checkpoints are not supported".into()));
            }
        }
        let (s, e) = records[&pkl];
        let list = pickle::tensors(&mmap[s..e]).map_err(|m| bad(format!("data.pkl: {m}")))?;
        let mut tensors = BTreeMap::new();
        for (name, t) in list {
            tensors.insert(name, t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
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

    /// Tensor `name`'s values as stored, borrowed from the mapped file, with its shape and the
    /// byte range they occupy — when it is a contiguous little-endian f32, bf16 or f16 tensor
    /// whose bytes lie inside its record at an aligned address (PyTorch aligns records to 64
    /// bytes); `None` otherwise (then [`PthFile::read_f32`] copies it).
    pub(crate) fn lend(
        &self,
        name: &str,
    ) -> Option<(super::Values<'_>, &[usize], std::ops::Range<usize>)> {
        use super::Values;
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
        let a = t.offset.checked_mul(width)?.checked_add(s)?;
        let b = numel.checked_mul(width)?.checked_add(a)?;
        if b > e {
            return None;
        }
        let bytes = self.mmap.get(a..b)?;
        let values = match t.storage_type.as_str() {
            "FloatStorage" => Values::F32(bytemuck::try_cast_slice(bytes).ok()?),
            "BFloat16Storage" => Values::Bf16(bytemuck::try_cast_slice(bytes).ok()?),
            "HalfStorage" => Values::F16(bytemuck::try_cast_slice(bytes).ok()?),
            _ => return None,
        };
        Some((values, &t.shape, a..b))
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

    /// Drops the pages of byte range `range` (from [`PthFile::lend`]) from this process: they
    /// were read and count as its memory; a later read faults them back in from the file.
    pub(crate) fn done_with(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED only discards clean
        // pages.
        let _ = unsafe {
            self.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                range.start,
                range.len(),
            )
        };
        #[cfg(not(unix))]
        let _ = range;
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
        let bytes = &self.mmap[s..e];
        let numel_storage = bytes.len() / width;
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
        if contiguous(&t.shape, &t.stride) {
            // One run of the storage: converted in bulk (a copy for f32, in parallel when large).
            let run = &bytes[t.offset * width..(t.offset + numel) * width];
            let dtype = match t.storage_type.as_str() {
                "FloatStorage" => safetensors::Dtype::F32,
                "HalfStorage" => safetensors::Dtype::F16,
                "BFloat16Storage" => safetensors::Dtype::BF16,
                _ => safetensors::Dtype::F64,
            };
            return super::weights::decode(run, dtype).map_err(bad);
        }
        let convert: fn(&[u8]) -> f32 = match t.storage_type.as_str() {
            "FloatStorage" => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            "HalfStorage" => |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            "BFloat16Storage" => |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => |b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        };
        let get = |i: usize| -> f32 { convert(&bytes[i * width..(i + 1) * width]) };
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

    /// Every tensor of LitGPT's files is lent in place (they are contiguous and aligned), with
    /// the values the copying reader gives, and stays lendable after its pages are dropped.
    #[test]
    fn tensors_are_lent_with_the_values_read_f32_copies() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
        for model in ["llama", "llama32", "phi3"] {
            let f = PthFile::open(&root.join(model).join("lit/lit_model.pth")).unwrap();
            let names: Vec<String> = f.metas().map(|(n, ..)| n.clone()).collect();
            assert!(!names.is_empty());
            for name in &names {
                let (values, shape, range) = f.lend(name).expect(name);
                let wide = values.to_f32_vec();
                assert_eq!(
                    shape.iter().product::<usize>(),
                    wide.len(),
                    "{model} {name}"
                );
                assert_eq!(wide, f.read_f32(name).unwrap(), "{model} {name}");
                f.done_with(range);
                assert_eq!(wide, f.read_f32(name).unwrap(), "{model} {name} re-read");
            }
            assert!(f.lend("no.such.tensor").is_none());
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
