//! `KvCache<B>`: keys and values for every layer; its length is the position of the next token.
//! Memory is allocated as positions are used (doubling, up to the capacity), so a large capacity
//! (a model's `block_size` can be a million positions) costs nothing until it is reached.

use crate::backend::ModelBackend;
use burn::prelude::*;

/// Keys and values of the tokens seen so far, `[1, kv_heads, allocated, head_size]` per layer
/// (`allocated` ≤ capacity).
#[derive(Debug, Clone)]
pub struct KvCache<B: ModelBackend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
    capacity: usize,
}

impl<B: ModelBackend> KvCache<B> {
    /// An empty cache for `n_layer` layers that can hold `capacity` positions.
    /// Memory is allocated as positions are written.
    pub fn new(n_layer: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
            len: 0,
            capacity,
        }
    }

    /// Number of positions already stored (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions memory is held for now (grows as positions are written, up to the capacity).
    pub fn allocated(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, _)| k.dims()[2])
            .max()
            .unwrap_or(0)
    }

    /// Forgets every position (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on (for rewinding a conversation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Writes `k`, `v` (`[1, kv_heads, t, hs]`) for `layer` at positions `len..len + t` and returns
    /// all keys and values `0..len + t`. Call [`KvCache::advance`] once all layers are done.
    ///
    /// The caller must have checked `len + t <= capacity`.
    pub fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, t, hs] = k.dims();
        let pos = self.len;
        let need = pos + t;
        let mut slot = match self.layers[layer].take() {
            Some(held) if held.0.dims()[2] >= need => held,
            old => {
                // Room for at least twice what was held (growing costs amortised O(1) per
                // position), at least `MIN_ROOM`, never more than the capacity.
                let held = old.as_ref().map_or(0, |o| o.0.dims()[2]);
                let room = need
                    .max(2 * held)
                    .max(MIN_ROOM)
                    .min(self.capacity.max(need));
                let dev = k.device();
                let (gk, gv) = (
                    Tensor::zeros([b, h, room, hs], &dev),
                    Tensor::zeros([b, h, room, hs], &dev),
                );
                match old {
                    Some((ok, ov)) if pos > 0 => (
                        gk.slice_assign(s![.., .., 0..pos, ..], ok.narrow(2, 0, pos)),
                        gv.slice_assign(s![.., .., 0..pos, ..], ov.narrow(2, 0, pos)),
                    ),
                    _ => (gk, gv),
                }
            }
        };
        for (c, new) in [(&mut slot.0, k), (&mut slot.1, v)] {
            B::write_cache(c, new, pos);
        }
        let seen = (
            slot.0.clone().narrow(2, 0, pos + t),
            slot.1.clone().narrow(2, 0, pos + t),
        );
        self.layers[layer] = Some(slot);
        seen
    }

    /// Moves the position forward by `t` after a forward pass.
    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.capacity);
    }
}

/// The fewest positions a layer's keys and values are allocated for.
const MIN_ROOM: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    /// `[1, h, t, hs]` with element `(g, i, d)` = `base + 100·g + 10·i + d`.
    fn rows<B: ModelBackend>(h: usize, t: usize, hs: usize, base: f32) -> Tensor<B, 4> {
        let mut v = Vec::new();
        for g in 0..h {
            for i in 0..t {
                v.extend((0..hs).map(|d| base + (100 * g + 10 * i + d) as f32));
            }
        }
        Tensor::from_data(TensorData::new(v, [1, h, t, hs]), &Default::default())
    }

    fn values<B: ModelBackend>(t: Tensor<B, 4>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    /// Appends of 3, 1 and 2 positions, a held view across an append, a truncate: what comes
    /// back is always exactly the positions written, in order.
    fn appends_return_everything_written<B: ModelBackend>() {
        let (h, hs) = (2, 4);
        let mut c = KvCache::<B>::new(2, 8);
        let mut want_k: Vec<Tensor<B, 4>> = Vec::new();
        let mut held = None;
        for (step, t) in [3usize, 1, 2].into_iter().enumerate() {
            let base = 1000.0 * (step + 1) as f32;
            let (k, v) = (rows::<B>(h, t, hs, base), rows::<B>(h, t, hs, -base));
            want_k.push(k.clone());
            let (ka, va) = c.append(1, k, v.clone());
            if step == 0 {
                held = Some(ka.clone());
            }
            let (ka0, _) = c.append(0, rows::<B>(h, t, hs, 0.5), rows::<B>(h, t, hs, 0.5));
            assert_eq!(ka.dims(), [1, h, c.len() + t, hs]);
            let want = Tensor::cat(want_k.clone(), 2);
            assert_eq!(values(ka), values(want));
            assert_eq!(values(va.narrow(2, c.len(), t)), values(v));
            assert_eq!(ka0.dims()[2], c.len() + t);
            c.advance(t);
        }
        // A view taken before later appends still reads what it covered.
        let first = Tensor::cat(vec![want_k[0].clone()], 2);
        assert_eq!(values(held.unwrap()), values(first));
        // Rewinding then appending overwrites the dropped positions.
        c.truncate(2);
        let (ka, _) = c.append(1, rows::<B>(h, 1, hs, 7.0), rows::<B>(h, 1, hs, 7.0));
        let want = Tensor::cat(
            vec![want_k[0].clone().narrow(2, 0, 2), rows::<B>(h, 1, hs, 7.0)],
            2,
        );
        assert_eq!(values(ka), values(want));
    }

    /// A cloned cache is a snapshot: rewinding and overwriting the original leaves it as it was
    /// (the in-place write happens only when nothing else holds the buffer).
    fn a_clone_keeps_its_positions<B: ModelBackend>() {
        let (h, hs) = (2, 4);
        let mut c = KvCache::<B>::new(1, 8);
        let first = rows::<B>(h, 3, hs, 1.0);
        let _ = c.append(0, first.clone(), first.clone());
        c.advance(3);
        let mut snap = c.clone();
        c.truncate(1);
        let (k, _) = c.append(0, rows::<B>(h, 2, hs, 50.0), rows::<B>(h, 2, hs, 50.0));
        assert_eq!(values(k.narrow(2, 1, 2)), values(rows::<B>(h, 2, hs, 50.0)));
        let (k, v) = snap.append(0, rows::<B>(h, 1, hs, 9.0), rows::<B>(h, 1, hs, 9.0));
        assert_eq!(values(k.narrow(2, 0, 3)), values(first.clone()));
        assert_eq!(values(v.narrow(2, 0, 3)), values(first));
    }

    /// A cache with a huge capacity holds memory only for what is written, growing as positions
    /// come, and keeps every position across a growth.
    fn memory_follows_use<B: ModelBackend>() {
        let (h, hs) = (2, 4);
        let mut c = KvCache::<B>::new(1, 1 << 24);
        assert_eq!(c.allocated(), 0);
        let mut want = Vec::new();
        for step in 0..300 {
            let t = if step == 0 { 200 } else { 1 };
            let k = rows::<B>(h, t, hs, step as f32);
            want.push(k.clone());
            let (ka, _) = c.append(0, k.clone(), k);
            c.advance(t);
            assert!(c.allocated() >= c.len() && c.allocated() <= (2 * c.len()).max(MIN_ROOM));
            if step % 97 == 0 || step == 299 {
                assert_eq!(values(ka), values(Tensor::cat(want.clone(), 2)), "{step}");
            }
        }
        assert_eq!(c.allocated(), 2 * MIN_ROOM);
        // Never past the capacity.
        let mut small = KvCache::<B>::new(1, 300);
        let k = rows::<B>(h, 290, hs, 0.0);
        let _ = small.append(0, k.clone(), k);
        small.advance(290);
        let k = rows::<B>(h, 10, hs, 0.0);
        let _ = small.append(0, k.clone(), k);
        assert_eq!(small.allocated(), 300);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn appends_return_everything_written_on_flex() {
        appends_return_everything_written::<crate::backend::Flex>();
        a_clone_keeps_its_positions::<crate::backend::Flex>();
        memory_follows_use::<crate::backend::Flex>();
    }

    #[cfg(feature = "ndarray")]
    #[test]
    fn appends_return_everything_written_on_ndarray() {
        appends_return_everything_written::<crate::backend::NdArray>();
        a_clone_keeps_its_positions::<crate::backend::NdArray>();
        memory_follows_use::<crate::backend::NdArray>();
    }

    /// On burn-flex a decoded token writes into the cache's buffer where it is: no copy of the
    /// whole cache per token (burn-flex's own `slice_assign` copies the destination).
    #[cfg(feature = "flex")]
    #[test]
    fn flex_appends_write_in_place() {
        type B = crate::backend::Flex;
        let address = |c: &KvCache<B>| {
            let (k, _) = c.layers[0].as_ref().unwrap();
            let t = crate::backend::flex::prim(k);
            t.storage::<f32>().as_ptr() as usize
        };
        let mut c = KvCache::<B>::new(1, 16);
        let _ = c.append(0, rows::<B>(3, 4, 8, 0.0), rows::<B>(3, 4, 8, 0.0));
        c.advance(4);
        let at = address(&c);
        for _ in 0..5 {
            let (k, v) = c.append(0, rows::<B>(3, 1, 8, 1.0), rows::<B>(3, 1, 8, 1.0));
            drop((k, v));
            c.advance(1);
            assert_eq!(address(&c), at);
        }
    }
}
