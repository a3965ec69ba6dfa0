//! The burn backends graftlm can run on, each behind a Cargo feature. Backends never change
//! results beyond floating-point rounding (the parity tests hold every enabled one to the same
//! reference).

use crate::error::{Error, Result};

#[cfg(feature = "flex")]
pub(crate) mod flex;
pub(crate) mod held;
pub(crate) mod operands;
pub(crate) mod ops;
pub(crate) mod reference;

/// A burn backend graftlm runs models on: burn's own ops plus the operations the model asks of
/// a backend (a linear layer with its adapter terms, attention, RoPE, ...), each with a default
/// in plain burn ops that burn-flex replaces with graftlm's host kernels. Implemented for every
/// backend this build enables ([`Flex`], [`NdArray`], [`Cuda`]); code generic over the backend
/// bounds its parameter by this trait, e.g. `fn run<B: ModelBackend>(m: &Model<B>)`.
// Sealed: the operations are the crate's own (`ops::ModelOps`), so the bound is private.
#[allow(private_bounds)]
pub trait ModelBackend: ops::ModelOps {}

impl<B: ops::ModelOps> ModelBackend for B {}

/// Names of the backends compiled into this build, default first.
#[allow(clippy::vec_init_then_push, unused_mut)]
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(feature = "flex")]
    v.push("flex");
    #[cfg(feature = "ndarray")]
    v.push("ndarray");
    #[cfg(feature = "cuda")]
    v.push("cuda");
    v
}

/// burn-flex: pure-Rust SIMD CPU backend (the default: graftlm's host kernels run on it, so it
/// decodes several times faster than ndarray; benches/RESULTS.md).
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex<f32, i32>;

/// burn-ndarray CPU backend.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray<f32, i64>;

/// burn-cuda (NVIDIA GPUs; needs CUDA 12 at run time).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// The default CPU backend of this build.
#[cfg(feature = "flex")]
pub type DefaultCpu = Flex;
/// The default CPU backend of this build.
#[cfg(all(not(feature = "flex"), feature = "ndarray"))]
pub type DefaultCpu = NdArray;

/// The most threads [`set_threads`] accepts.
pub const MAX_THREADS: usize = 1024;

/// Sets how many threads graftlm's CPU kernels run on (`1..=MAX_THREADS`): rayon's global pool,
/// which burn-flex and graftlm's host kernels share. Call it before the first model is loaded
/// and before [`threads`]: the pool starts on first use and keeps its size. Without a call the
/// pool takes `RAYON_NUM_THREADS`, or one thread per logical CPU. A second call with the size the
/// pool already has is accepted. (Work started from inside a rayon pool of the caller's own runs
/// on that pool instead.)
///
/// Errors: `n` is 0 or above [`MAX_THREADS`] ([`Error::InvalidArgument`]); the pool already runs
/// with another size, or its threads could not be started ([`Error::Unsupported`]). Builds
/// without the `flex` feature only check `n` (their backends bring their own threading).
pub fn set_threads(n: usize) -> Result<()> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(Error::invalid(
            "threads",
            format!("must be 1 to {MAX_THREADS}, got {n}"),
        ));
    }
    #[cfg(feature = "flex")]
    {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            // The global pool's size, read from a thread outside any pool (inside one, rayon
            // reports that pool's size).
            let running = std::thread::spawn(rayon::current_num_threads)
                .join()
                .unwrap_or(0);
            if running == 0 {
                return Err(Error::Unsupported(format!(
                    "could not start {n} threads: {e}"
                )));
            }
            if running != n {
                return Err(Error::Unsupported(format!(
                    "the thread pool already runs {running} threads (set the count before the \
                     first model is loaded)"
                )));
            }
        }
    }
    Ok(())
}

/// How many threads graftlm's CPU kernels run on, 1 without the `flex` feature. It starts the
/// pool if it has not started, which fixes its size: call [`set_threads`] first.
pub fn threads() -> usize {
    #[cfg(feature = "flex")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "flex"))]
    {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0 and sizes past the cap are refused; the running size is accepted again; another size,
    /// once the pool runs, is refused with the size it runs.
    #[test]
    fn thread_count_is_checked() {
        for bad in [0, MAX_THREADS + 1, usize::MAX] {
            assert!(matches!(
                set_threads(bad),
                Err(Error::InvalidArgument { .. })
            ));
        }
        let n = threads();
        assert!(n >= 1);
        set_threads(n).unwrap();
        #[cfg(feature = "flex")]
        match set_threads(n + 1) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains(&format!("{n} threads")), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
