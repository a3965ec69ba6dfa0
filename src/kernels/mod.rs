//! The host CPU math: linear layers at any row count, attention, weight storage (panels, 16-bit
//! holding), element-wise math — on slices and shapes. Nothing here knows a `Model`, an adapter
//! or a burn tensor; [`crate::backend::flex`] reads burn-flex tensors in place and calls these.
//!
//! Every kernel gives the same bits whatever the thread count and instruction set (AVX-512,
//! AVX2, portable loops; `GRAFTLM_NO_AVX512=1` runs the AVX2 forms on an AVX-512 machine), and
//! the tests hold the forms to each other bit for bit. Work runs on rayon's global pool (the one
//! burn-flex uses); without the `flex` feature the kernels are compiled but unused.

#![cfg_attr(not(feature = "flex"), allow(dead_code, unused_imports))]

pub(crate) mod attention;
pub(crate) mod buffer;
pub(crate) mod linear;
pub(crate) mod math;
pub(crate) mod panels;
pub(crate) mod quant;
pub(crate) mod transpose;
pub(crate) mod weight;
