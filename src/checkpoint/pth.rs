//! PyTorch `.pth` checkpoints (the zip format of `torch.save` and LitGPT's `incremental_save`):
//! the zip is memory-mapped, `data.pkl` is parsed by [`super::pickle`], and each tensor is read from
//! its storage record with its offset and strides checked against the record's size.

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
        let get = |i: usize| -> f32 {
            let b = &bytes[i * width..(i + 1) * width];
            match t.storage_type.as_str() {
                "FloatStorage" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                "HalfStorage" => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                "BFloat16Storage" => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            }
        };
        let contiguous = {
            let mut expect = 1;
            let mut ok = true;
            for (&d, &st) in t.shape.iter().zip(&t.stride).rev() {
                if d != 1 && st != expect {
                    ok = false;
                }
                expect *= d;
            }
            ok
        };
        let mut out = Vec::with_capacity(numel);
        if contiguous {
            out.extend((t.offset..t.offset + numel).map(get));
        } else {
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
        }
        Ok(out)
    }
}
