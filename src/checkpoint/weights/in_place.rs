//! Tensors lent in place: values as stored (f32, bf16 or f16), read into a reused buffer, for the
//! model to convert into what it holds without an f32 copy first (safetensors entries and
//! contiguous `.pth` tensors; separate q/k/v projections lent together, stacked).

use super::*;
use crate::checkpoint::pth::Lendable;

/// A tensor read as stored into one of the scratch buffers, with its type and shape.
struct Lent<'a> {
    buf: Vec<u32>,
    bytes: usize,
    kind: Lendable,
    shape: &'a [usize],
}

impl Lent<'_> {
    fn values(&self) -> Option<Values<'_>> {
        self.kind
            .view(&bytemuck::cast_slice::<u32, u8>(&self.buf)[..self.bytes])
    }
}

/// At most this many scratch buffers are kept between tensors (q, k and v lent together)...
const KEEP: usize = 4;
/// ... and none larger than this (in 4-byte words): a kept buffer is memory the load holds on top
/// of the weights until it ends, so the largest tensors (an embedding) give theirs back at once.
const KEEP_WORDS: usize = 4 << 20;

impl WeightFiles {
    /// Calls `f(values, stored shape)` with tensor `name` as stored when it is little-endian f32,
    /// bf16 or f16 (safetensors) or a contiguous tensor of such a storage type (`.pth`): read into
    /// a reused buffer, no conversion; `Ok(false)` without calling `f` otherwise (then
    /// [`WeightFiles::read_f32`] converts it). Non-finite values are refused as by `read_f32`.
    pub fn with_in_place(&self, name: &str, f: impl FnOnce(Values<'_>, &[usize])) -> Result<bool> {
        self.with_in_place_stacked(&[name], |parts, shape| f(parts[0], shape))
    }

    /// [`WeightFiles::with_in_place`] for tensors stacked by rows (the separate q, k and v
    /// projections of a fused weight): `f(parts, stacked shape)` when every one can be lent
    /// (same dtype and row length), else `Ok(false)` without calling `f`.
    pub fn with_in_place_stacked(
        &self,
        names: &[&str],
        f: impl FnOnce(&[Values<'_>], &[usize]),
    ) -> Result<bool> {
        let pieces: Vec<(&str, Option<std::ops::Range<usize>>)> =
            names.iter().map(|&n| (n, None)).collect();
        self.with_in_place_rows(&pieces, f)
    }

    /// [`WeightFiles::with_in_place_stacked`] of row ranges: each piece is rows `range` (all
    /// rows when `None`) of a stored tensor, and the pieces stack by rows in the order given
    /// (a fused weight stored in another row order, or a slice of one). `Ok(false)` when a
    /// tensor cannot be lent, the pieces do not stack, or a range lies outside its tensor.
    pub fn with_in_place_rows(
        &self,
        pieces: &[(&str, Option<std::ops::Range<usize>>)],
        f: impl FnOnce(&[Values<'_>], &[usize]),
    ) -> Result<bool> {
        if pieces.is_empty() {
            return Ok(false);
        }
        // Each stored tensor read once (and its finiteness checked once), then each piece taken
        // as a slice of it.
        let mut lent: Vec<(&str, Lent<'_>)> = Vec::new();
        let outcome = self.lend_each(pieces, &mut lent).and_then(|all| {
            if !all {
                return Ok(false);
            }
            let Some((parts, shape)) = stack(&lent, pieces) else {
                return Ok(false);
            };
            for (name, l) in &lent {
                if let Some(v) = l.values() {
                    self.check_finite(name, v)?;
                }
            }
            f(&parts, &shape);
            Ok(true)
        });
        // The buffers go back to the pool whatever happened.
        if let Ok(mut pool) = self.scratch.lock() {
            for (_, l) in lent {
                if pool.len() < KEEP && l.buf.capacity() <= KEEP_WORDS {
                    pool.push(l.buf);
                }
            }
        }
        outcome
    }

    /// Reads every stored tensor the pieces name, once each, into `lent`; `Ok(false)` at the
    /// first that cannot be lent.
    fn lend_each<'a>(
        &'a self,
        pieces: &[(&'a str, Option<std::ops::Range<usize>>)],
        lent: &mut Vec<(&'a str, Lent<'a>)>,
    ) -> Result<bool> {
        for &(name, _) in pieces {
            if lent.iter().any(|(n, _)| *n == name) {
                continue;
            }
            match self.lend(name)? {
                Some(l) => lent.push((name, l)),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Whether stored tensors `a` and `b` are one and the same values: two views of one
    /// storage with the same offset, shape and strides (`.pth`; safetensors entries never
    /// share bytes).
    pub fn same_values(&self, a: &str, b: &str) -> bool {
        match &self.backing {
            Backing::Pth { file, prefix } => {
                file.same_view(&format!("{prefix}{a}"), &format!("{prefix}{b}"))
            }
            Backing::Safetensors { .. } => false,
        }
    }

    /// Tensor `name` read as stored, when it can be (see [`WeightFiles::with_in_place`]).
    fn lend(&self, name: &str) -> Result<Option<Lent<'_>>> {
        if cfg!(target_endian = "big") {
            return Ok(None);
        }
        let (file, kind, shape, range) = match &self.backing {
            Backing::Safetensors { shards, index } => {
                let Some((si, dtype, shape, (start, end))) = index.get(name) else {
                    return Ok(None);
                };
                let (kind, width) = match dtype {
                    Dtype::F32 => (Lendable::F32, 4),
                    Dtype::BF16 => (Lendable::Bf16, 2),
                    Dtype::F16 => (Lendable::F16, 2),
                    _ => return Ok(None),
                };
                let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if numel.and_then(|n| n.checked_mul(width)) != end.checked_sub(*start) {
                    return Ok(None);
                }
                let shard = &shards[*si];
                let at = shard.data_start;
                let range = at + *start as u64..at + *end as u64;
                (&shard.file, kind, &shape[..], range)
            }
            Backing::Pth { file, prefix } => {
                match file.contiguous_range(&format!("{prefix}{name}")) {
                    Some((kind, shape, range)) => (&file.file, kind, shape, range),
                    None => return Ok(None),
                }
            }
        };
        let bytes = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
        if range.end > file.len() {
            return Ok(None); // read_f32 names the problem
        }
        let words = bytes.div_ceil(4);
        let mut buf = if words <= KEEP_WORDS {
            self.scratch.lock().ok().and_then(|mut p| p.pop())
        } else {
            None
        }
        .unwrap_or_default();
        buf.resize(words, 0);
        let dst = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buf)[..bytes];
        file.read_exact_at(dst, range.start)?;
        Ok(Some(Lent {
            buf,
            bytes,
            kind,
            shape,
        }))
    }
}

/// The pieces as slices of the lent tensors, stacked, with the stacked shape; `None` when they
/// do not stack.
fn stack<'a>(
    lent: &'a [(&str, Lent<'_>)],
    pieces: &[(&str, Option<std::ops::Range<usize>>)],
) -> Option<(Vec<Values<'a>>, Vec<usize>)> {
    let mut parts: Vec<Values<'a>> = Vec::with_capacity(pieces.len());
    let mut shape: Vec<usize> = Vec::new();
    for (name, rows) in pieces {
        let l = &lent.iter().find(|(n, _)| n == name)?.1;
        let whole = rows.is_none() && pieces.len() == 1;
        if l.shape.is_empty() && !whole {
            return None; // a scalar has no rows to stack or slice
        }
        let row: usize = l.shape.iter().skip(1).product();
        let r = rows
            .clone()
            .unwrap_or(0..l.shape.first().copied().unwrap_or(1));
        if r.start > r.end || r.end > l.shape.first().copied().unwrap_or(1) {
            return None;
        }
        let values = l.values()?.slice(r.start * row..r.end * row)?;
        if parts.is_empty() {
            shape = l.shape.to_vec();
            if let Some(first) = shape.first_mut() {
                *first = r.len();
            }
        } else if l.shape.len() != shape.len()
            || l.shape[1..] != shape[1..]
            || std::mem::discriminant(&values) != std::mem::discriminant(&parts[0])
        {
            return None;
        } else {
            shape[0] += r.len();
        }
        parts.push(values);
    }
    Some((parts, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tensors are lent in place, as stored, with the values `read_f32` copies.
    #[test]
    fn tensors_are_lent_in_place_with_the_copied_values() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
        let name = "model.layers.0.mlp.up_proj.weight";
        for (model, f32_stored) in [("llama", true), ("llama-bf16", false)] {
            let files = WeightFiles::open_dir(&root.join(model).join("hf")).unwrap();
            let want = files.read_f32(name).unwrap();
            let mut seen = None;
            let lent = files
                .with_in_place(name, |v, shape| {
                    assert_eq!(matches!(v, Values::F32(_)), f32_stored, "{model}");
                    seen = Some((v.to_f32_vec(), shape.to_vec()));
                })
                .unwrap();
            assert!(lent, "{model}");
            assert_eq!(seen, Some((want.data, want.shape)), "{model}");
            assert!(!files
                .with_in_place("no.such.tensor", |_, _| panic!())
                .unwrap());
        }
    }

    /// Separate q, k, v projections are lent stacked by rows, with the values and shape their
    /// concatenation read by `read_f32` has; anything that cannot be stacked is not lent.
    #[test]
    fn projections_are_lent_stacked() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
        let p = "model.layers.1.self_attn";
        let names = [
            format!("{p}.q_proj.weight"),
            format!("{p}.k_proj.weight"),
            format!("{p}.v_proj.weight"),
        ];
        let names: Vec<&str> = names.iter().map(|n| &n[..]).collect();
        for model in ["llama", "llama-bf16"] {
            let files = WeightFiles::open_dir(&root.join(model).join("hf")).unwrap();
            let mut want = Vec::new();
            let mut rows = 0;
            for n in &names {
                let t = files.read_f32(n).unwrap();
                rows += t.shape[0];
                want.extend(t.data);
            }
            let cols = files.read_f32(names[0]).unwrap().shape[1];
            let mut seen = None;
            let lent = files
                .with_in_place_stacked(&names, |parts, shape| {
                    assert_eq!(parts.len(), 3);
                    let all: Vec<f32> = parts.iter().flat_map(|v| v.to_f32_vec()).collect();
                    seen = Some((all, shape.to_vec()));
                })
                .unwrap();
            assert!(lent, "{model}");
            assert_eq!(seen, Some((want, vec![rows, cols])), "{model}");
            // A missing part, or rows of another length (the MLP's down projection), is not lent.
            let missing = [names[0], "no.such.tensor"];
            assert!(!files
                .with_in_place_stacked(&missing, |_, _| panic!())
                .unwrap());
            let down = "model.layers.1.mlp.down_proj.weight";
            assert_ne!(files.read_f32(down).unwrap().shape[1], cols, "{model}");
            assert!(!files
                .with_in_place_stacked(&[names[0], down], |_, _| panic!())
                .unwrap());
        }
    }
}
