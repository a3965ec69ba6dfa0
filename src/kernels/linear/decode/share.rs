//! A linear's first low-rank term's `x·A`, computed once and shared among the linear's column
//! tiles.
//!
//! Every tile needs all of `x·A`. If each tile's task computed it, every thread would read all
//! of `A` at about the same time, which makes a step with a LoRA term measurably slower
//! (measurements: benches/RESULTS.md). Instead each task computes a share of `A`'s columns
//! (whole groups of 16) in the first panels of its weight pass and publishes it; when it needs
//! the rest it takes what the others published, and computes any share not yet there itself.
//! Nobody waits, so it is right however the tasks are scheduled (one thread running them all
//! included), and the bits are the same whoever computes a share.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Shares published so far (tests check that the weight pass computed some).
#[cfg(test)]
pub(crate) static PUBLISHED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// `x·A` of one term (`r` values) as the linear's tiles publish it.
pub(crate) struct SharedXa {
    /// The values' bits.
    xa: Vec<AtomicU32>,
    /// Per tile: its share is in `xa`.
    done: Vec<AtomicBool>,
    /// Tile `t` computes share `(t + turn) % tiles`.
    turn: usize,
}

impl SharedXa {
    /// Nothing published yet, for a term of rank `r` split among `tiles` tiles; tile `t`
    /// computes share `(t + turn) % tiles`.
    pub(crate) fn new(r: usize, tiles: usize, turn: usize) -> Self {
        Self {
            xa: (0..r).map(|_| AtomicU32::new(0)).collect(),
            done: (0..tiles.max(1)).map(|_| AtomicBool::new(false)).collect(),
            turn,
        }
    }

    /// The columns of `A` whose `x·A` tile `t` computes: a run of whole groups of 16 (when
    /// there are more tiles than groups, some get none).
    pub(crate) fn columns(&self, t: usize) -> Range<usize> {
        let (r, tiles) = (self.xa.len(), self.done.len());
        let groups = r.div_ceil(16);
        if t >= tiles {
            return 0..0;
        }
        let s = t.wrapping_add(self.turn) % tiles;
        let at = |s: usize| (16 * (s * groups / tiles)).min(r);
        at(s)..at(s + 1)
    }

    /// Tile `t`'s share (`xa`, its [`SharedXa::columns`]) for the others to take.
    pub(crate) fn publish(&self, t: usize, xa: &[f32]) {
        let cols = self.columns(t);
        debug_assert_eq!(xa.len(), cols.len());
        for (s, v) in self.xa[cols].iter().zip(xa) {
            s.store(v.to_bits(), Ordering::Relaxed);
        }
        self.done[t].store(true, Ordering::Release);
        #[cfg(test)]
        PUBLISHED.fetch_add(1, Ordering::Relaxed);
    }

    /// All of `x·A`: the shares published so far, the others made by `compute(columns, out)`.
    pub(crate) fn gather(&self, mut compute: impl FnMut(Range<usize>, &mut [f32])) -> Vec<f32> {
        let mut xa = vec![0f32; self.xa.len()];
        for (t, done) in self.done.iter().enumerate() {
            let cols = self.columns(t);
            if cols.is_empty() {
                continue;
            }
            if done.load(Ordering::Acquire) {
                for (o, s) in xa[cols.clone()].iter_mut().zip(&self.xa[cols]) {
                    *o = f32::from_bits(s.load(Ordering::Relaxed));
                }
            } else {
                compute(cols.clone(), &mut xa[cols]);
            }
        }
        xa
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiles' shares cover every column once, in whole groups of 16, however many tiles.
    #[test]
    fn shares_cover_the_columns_once_in_whole_groups() {
        for r in [1, 8, 16, 17, 48, 100, 128, 256] {
            for tiles in 1..6 {
                for turn in [0, 1, 4, 7] {
                    let s = SharedXa::new(r, tiles, turn);
                    let mut shares: Vec<Range<usize>> = (0..tiles).map(|t| s.columns(t)).collect();
                    shares.sort_by_key(|c| (c.start, c.end));
                    let mut next = 0;
                    for c in shares {
                        assert_eq!(c.start, next, "r={r} tiles={tiles} turn={turn}");
                        assert!(
                            c.start.is_multiple_of(16) && (c.end == r || c.end.is_multiple_of(16))
                        );
                        next = c.end;
                    }
                    assert_eq!(next, r);
                    assert!(s.columns(tiles).is_empty());
                }
            }
        }
        // The turn moves a rank-16 term's one share from tile to tile.
        let (even, odd) = (SharedXa::new(16, 2, 0), SharedXa::new(16, 2, 1));
        assert_eq!((even.columns(0), even.columns(1)), (0..0, 0..16));
        assert_eq!((odd.columns(0), odd.columns(1)), (0..16, 0..0));
    }

    /// What was published is taken, what was not is computed, and nothing else.
    #[test]
    fn gather_takes_what_was_published_and_computes_the_rest() {
        let s = SharedXa::new(40, 3, 0); // shares 0..16 | 16..32 | 32..40
        s.publish(1, &[2.5; 16]);
        let mut asked = Vec::new();
        let xa = s.gather(|cols, out| {
            out.fill(cols.start as f32);
            asked.push(cols);
        });
        assert_eq!(asked, [0..16, 32..40]);
        assert_eq!(&xa[..16], &[0.0; 16]);
        assert_eq!(&xa[16..32], &[2.5; 16]);
        assert_eq!(&xa[32..], &[32.0; 8]);
    }
}
