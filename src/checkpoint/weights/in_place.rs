//! Tensors lent in place: values borrowed from the mapped weight files as stored, for the model
//! to convert into what it holds without an f32 copy first (safetensors entries and contiguous
//! `.pth` tensors of f32, bf16 or f16; separate q/k/v projections lent together, stacked).

use super::*;

/// A tensor lent in place: its values, shape, and the mapped bytes they come from.
struct Lent<'a> {
    values: Values<'a>,
    shape: &'a [usize],
    from: Mapped<'a>,
    range: std::ops::Range<usize>,
}

/// The mapped file a [`Lent`] tensor lies in.
enum Mapped<'a> {
    Shard(&'a Shard),
    Pth(&'a PthFile),
}

impl WeightFiles {
    /// Calls `f(values, stored shape)` with tensor `name` read in place from the mapped file when
    /// it is stored as little-endian f32, bf16 or f16 at an aligned offset (safetensors), or as
    /// a contiguous tensor of such a storage type (`.pth`) — no copy; `Ok(false)` without
    /// calling `f` otherwise (then [`WeightFiles::read_f32`] copies it). Non-finite values are
    /// refused as by `read_f32`. Afterwards the tensor's pages are dropped from this process
    /// (they count as its memory; a later read faults them back in from the file).
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
        // Each stored tensor once (its finiteness checked and its pages dropped once), then
        // each piece as a slice of it.
        let mut lent: Vec<(&str, Lent<'_>)> = Vec::new();
        let mut parts: Vec<Values<'_>> = Vec::with_capacity(pieces.len());
        let mut shape: Vec<usize> = Vec::new();
        for (name, rows) in pieces {
            let at = match lent.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    let Some(l) = self.lend(name) else {
                        return Ok(false);
                    };
                    lent.push((name, l));
                    lent.len() - 1
                }
            };
            let l = &lent[at].1;
            let whole = rows.is_none() && pieces.len() == 1;
            if l.shape.is_empty() && !whole {
                return Ok(false); // a scalar has no rows to stack or slice
            }
            let row: usize = l.shape.iter().skip(1).product();
            let r = rows
                .clone()
                .unwrap_or(0..l.shape.first().copied().unwrap_or(1));
            if r.start > r.end || r.end > l.shape.first().copied().unwrap_or(1) {
                return Ok(false);
            }
            let Some(values) = l.values.slice(r.start * row..r.end * row) else {
                return Ok(false);
            };
            if parts.is_empty() {
                shape = l.shape.to_vec();
                if let Some(first) = shape.first_mut() {
                    *first = r.len();
                }
            } else if l.shape.len() != shape.len()
                || l.shape[1..] != shape[1..]
                || std::mem::discriminant(&values) != std::mem::discriminant(&parts[0])
            {
                return Ok(false);
            } else {
                shape[0] += r.len();
            }
            parts.push(values);
        }
        for (name, l) in &lent {
            self.check_finite(name, l.values)?;
        }
        f(&parts, &shape);
        // Done with these pages: drop them from this process (page-cache pages count as RSS).
        for (_, l) in lent {
            match l.from {
                #[cfg(unix)]
                // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED only discards
                // clean pages; a later read of the range faults them back in from the file.
                Mapped::Shard(shard) => {
                    let _ = unsafe {
                        shard.mmap.unchecked_advise_range(
                            memmap2::UncheckedAdvice::DontNeed,
                            l.range.start,
                            l.range.len(),
                        )
                    };
                }
                #[cfg(not(unix))]
                Mapped::Shard(_) => {}
                Mapped::Pth(file) => file.done_with(l.range),
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

    /// Tensor `name` borrowed as stored from its mapped file, when it can be (see
    /// [`WeightFiles::with_in_place`]).
    fn lend(&self, name: &str) -> Option<Lent<'_>> {
        if cfg!(target_endian = "big") {
            return None;
        }
        match &self.backing {
            Backing::Safetensors { shards, index } => {
                let (si, dtype, shape, (start, end)) = index.get(name)?;
                let shard = &shards[*si];
                let (a, b) = (shard.data_start + start, shard.data_start + end);
                let bytes = shard.mmap.get(a..b)?;
                let values = match dtype {
                    Dtype::F32 => bytemuck::try_cast_slice(bytes).ok().map(Values::F32),
                    Dtype::BF16 => bytemuck::try_cast_slice(bytes).ok().map(Values::Bf16),
                    Dtype::F16 => bytemuck::try_cast_slice(bytes).ok().map(Values::F16),
                    _ => None,
                }
                .filter(|v| v.len() == shape.iter().product::<usize>())?;
                Some(Lent {
                    values,
                    shape,
                    from: Mapped::Shard(shard),
                    range: a..b,
                })
            }
            Backing::Pth { file, prefix } => {
                let (values, shape, range) = file.lend(&format!("{prefix}{name}"))?;
                Some(Lent {
                    values,
                    shape,
                    from: Mapped::Pth(file),
                    range,
                })
            }
        }
    }
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
