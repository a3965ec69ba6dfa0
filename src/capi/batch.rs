//! Several prompts generated together through the C ABI, each with its own adapter: one forward
//! per step for all of them (`graftlm::generate_batch`).

use std::ffi::{c_char, c_void};

use super::c_text;
use super::generate::{graftlm_gen_params, graftlm_result, options, ResultData};
use super::handles::{graftlm_model, model_of, CallbackScope};
use super::{arg_str, graftlm_status, guard};
use crate::error::Error;
use crate::generate::{generate_batch, BatchRequest};

/// One request of a batch: a prompt and the name of the attached adapter it uses (NULL: the base
/// model alone). The adapter must be attached separate (not merged), LoRA.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct graftlm_batch_request {
    pub prompt: *const c_char,
    pub adapter: *const c_char,
}

/// Batch streaming callback: receives each new piece of text of request `index` (whole UTF-8,
/// NUL-terminated, `len` bytes without the NUL). Return `true` to continue that request, `false`
/// to stop it (the others go on). As `graftlm_stream_cb`: calls into the same model that need
/// its lock return `GRAFTLM_ERR_BUSY`, and it must not unwind.
pub type graftlm_batch_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        index: usize,
        piece: *const c_char,
        len: usize,
    ) -> bool,
>;

/// Generates a continuation for each of the `n` requests (prompt style applied unless
/// `params->raw`), decoding all of them in one forward per step: the base weights are read once
/// for the whole batch, each request with its own adapter. Each result equals `graftlm_generate`
/// run with only that request's adapter active. On success `results[i]` receives request `i`'s
/// result (free each with `graftlm_result_free`); on failure nothing is written. `cb` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn graftlm_generate_batch(
    model: *const graftlm_model,
    requests: *const graftlm_batch_request,
    n: usize,
    params: *const graftlm_gen_params,
    cb: graftlm_batch_cb,
    user_data: *mut c_void,
    results: *mut *mut graftlm_result,
) -> graftlm_status {
    guard(|| {
        let shared = &*model_of(model)?;
        if n == 0 {
            return Err(Error::invalid("n", "must be at least 1"));
        }
        if requests.is_null() {
            return Err(Error::invalid("requests", "is NULL"));
        }
        if results.is_null() {
            return Err(Error::invalid("results", "is NULL"));
        }
        let params = params
            .as_ref()
            .ok_or_else(|| Error::invalid("params", "is NULL"))?;
        let opts = options(params)?;
        // SAFETY: the caller passes `n` requests at `requests` (checked non-NULL).
        let reqs = std::slice::from_raw_parts(requests, n);
        let st = shared.read()?;
        let tok = &shared.tokenizer;
        let mut prompts = Vec::with_capacity(n);
        let mut adapters = Vec::with_capacity(n);
        for (i, r) in reqs.iter().enumerate() {
            let prompt = arg_str(r.prompt, &format!("requests[{i}].prompt"))?;
            let text = if params.raw {
                prompt.to_string()
            } else {
                st.style.apply(prompt, None)
            };
            prompts.push(tok.encode(&text)?);
            adapters.push(if r.adapter.is_null() {
                None
            } else {
                Some(arg_str(r.adapter, &format!("requests[{i}].adapter"))?)
            });
        }
        let batch: Vec<BatchRequest<'_>> = prompts
            .iter()
            .zip(&adapters)
            .map(|(p, a)| BatchRequest {
                prompt_ids: p,
                adapter: *a,
            })
            .collect();
        let mut stopped = vec![false; n];
        let gens = generate_batch(&st.model, tok, &batch, &opts, &mut |i, piece| match cb {
            None => true,
            Some(f) => {
                let c = c_text(piece);
                let _inside = CallbackScope::enter(shared);
                let go = f(user_data, i, c.as_ptr(), c.as_bytes().len());
                stopped[i] |= !go;
                go
            }
        })?;
        for (i, g) in gens.into_iter().enumerate() {
            // SAFETY: the caller passes room for `n` result pointers (checked non-NULL).
            *results.add(i) = ResultData::handle(g, stopped[i]);
        }
        Ok(())
    })
}
