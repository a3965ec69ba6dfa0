//! `KvCache<B>`: preallocated keys and values for every layer; its length is the position of
//! the next token.

use burn::prelude::*;

/// Keys and values of the tokens seen so far, `[1, kv_heads, capacity, head_size]` per layer.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `n_layer` layers that can hold `capacity` positions.
    /// Memory is allocated on first use.
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
        let (pos, cap) = (self.len, self.capacity);
        let slot = self.layers[layer].get_or_insert_with(|| {
            let dev = k.device();
            (
                Tensor::zeros([b, h, cap, hs], &dev),
                Tensor::zeros([b, h, cap, hs], &dev),
            )
        });
        slot.0
            .inplace(|c| c.slice_assign(s![.., .., pos..pos + t, ..], k));
        slot.1
            .inplace(|c| c.slice_assign(s![.., .., pos..pos + t, ..], v));
        (
            slot.0.clone().narrow(2, 0, pos + t),
            slot.1.clone().narrow(2, 0, pos + t),
        )
    }

    /// Moves the position forward by `t` after a forward pass.
    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.capacity);
    }
}
