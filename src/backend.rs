//! The burn backends graftlm can run on, each behind a Cargo feature. Backends never change
//! results beyond floating-point rounding (the parity tests hold every enabled one to the same
//! reference).

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

/// burn-flex: pure-Rust SIMD CPU backend (the default, ~6× faster than ndarray for decoding).
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
