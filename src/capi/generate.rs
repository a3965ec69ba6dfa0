//! Tokenization, generation (whole or streamed) and sessions through the C ABI.

use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex};

use super::handles::{graftlm_model, model_of, CallbackScope, Shared};
use super::registry::Registry;
use super::{arg_str, c_text, graftlm_status, guard, out_ptr};
use crate::error::Error;
use crate::generate::{generate, GenerateOptions, Generation, StopReason};
use crate::sampling::SamplingParams;

/// Generation parameters. Start from `graftlm_gen_params_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct graftlm_gen_params {
    /// Maximum number of new tokens (≥ 1).
    pub max_new_tokens: u32,
    /// 0 is greedy.
    pub temperature: f32,
    /// 0: no top-k limit.
    pub top_k: u32,
    /// In [0, 1]; 1 keeps everything.
    pub top_p: f32,
    pub seed: u64,
    /// Use the prompt as is instead of applying the checkpoint's prompt style.
    pub raw: bool,
}

/// The defaults of `litgpt generate`: 50 tokens, temperature 0.8, top-k 50, top-p 1, seed 1234,
/// prompt style applied.
#[no_mangle]
pub extern "C" fn graftlm_gen_params_default() -> graftlm_gen_params {
    graftlm_gen_params {
        max_new_tokens: 50,
        temperature: 0.8,
        top_k: 50,
        top_p: 1.0,
        seed: 1234,
        raw: false,
    }
}

/// The outcome of a generation: text and token ids. Immutable; free with `graftlm_result_free`.
pub struct graftlm_result {
    _opaque: [u8; 0],
}

/// What a `graftlm_result` handle stands for.
pub(super) struct ResultData {
    text: CString,
    ids: Vec<u32>,
    prompt_ids: Vec<u32>,
    stop_reason: CString,
}

static RESULTS: Registry<ResultData> = Registry::new(4, "graftlm_result");

impl ResultData {
    /// A finished generation registered as a handle, `StopReason::Callback` when the caller's
    /// callback stopped it.
    pub(super) fn handle(g: Generation, stopped_by_callback: bool) -> *mut graftlm_result {
        let reason = if stopped_by_callback {
            StopReason::Callback
        } else {
            g.stop_reason
        };
        RESULTS.insert(ResultData {
            text: c_text(&g.text),
            ids: g.generated_ids,
            prompt_ids: g.prompt_ids,
            stop_reason: c_text(reason.as_str()),
        }) as *mut graftlm_result
    }
}

/// The data behind a result handle, or `None`.
fn result_of(r: *const graftlm_result) -> Option<Arc<ResultData>> {
    RESULTS.get(r as usize, "result").ok()
}

/// Streaming callback: receives each new piece of text (whole UTF-8, NUL-terminated, `len` bytes
/// without the NUL). Return `true` to continue, `false` to stop. It runs on the calling thread
/// while the generation holds the model's lock: calls into the same model that need the lock
/// return `GRAFTLM_ERR_BUSY` there. It must not unwind (a C++ exception or a `longjmp` out of it
/// is undefined behaviour): catch everything inside and return `false`.
pub type graftlm_stream_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, piece: *const c_char, len: usize) -> bool>;

/// A conversation on a model, used by one thread at a time; holds the model alive.
pub struct graftlm_session {
    _opaque: [u8; 0],
}

/// What a `graftlm_session` handle stands for.
struct SessionData {
    shared: Arc<Shared>,
    history: Vec<u32>,
}

static SESSIONS: Registry<Mutex<SessionData>> = Registry::new(3, "graftlm_session");

pub(super) fn options(p: &graftlm_gen_params) -> Result<GenerateOptions, Error> {
    let sampling = SamplingParams {
        temperature: p.temperature,
        top_k: (p.top_k > 0).then_some(p.top_k as usize),
        top_p: p.top_p,
        seed: p.seed,
    };
    sampling.validate()?;
    if p.max_new_tokens == 0 {
        return Err(Error::invalid("max_new_tokens", "must be at least 1"));
    }
    Ok(GenerateOptions {
        max_new_tokens: p.max_new_tokens as usize,
        sampling,
        ..Default::default()
    })
}

/// Shared by the plain, streaming and session calls. `history` is prepended (sessions).
unsafe fn run(
    shared: &Shared,
    prompt: *const c_char,
    params: *const graftlm_gen_params,
    cb: graftlm_stream_cb,
    user_data: *mut c_void,
    history: Option<&mut Vec<u32>>,
    out: *mut *mut graftlm_result,
) -> Result<(), Error> {
    let prompt = arg_str(prompt, "prompt")?;
    let params = params
        .as_ref()
        .ok_or_else(|| Error::invalid("params", "is NULL"))?;
    out_ptr(out, "out")?;
    let mut opts = options(params)?;
    let st = shared.read()?;
    let tok = &shared.tokenizer;
    let text = if params.raw {
        prompt.to_string()
    } else {
        st.style.apply(prompt, None)
    };
    let continuing = history.as_ref().is_some_and(|h| !h.is_empty());
    let turn = tok.encode_with(&text, if continuing { Some(false) } else { None })?;
    let ids: Vec<u32> = match &history {
        Some(h) => [h.as_slice(), &turn].concat(),
        None => turn,
    };
    if history.is_some() {
        opts.stop_tokens = Some(st.style.stop_tokens(tok));
        opts.include_stop_tokens = false;
    }
    let mut stopped_by_callback = false;
    let g = generate(&st.model, tok, &ids, &opts, &mut |piece| match cb {
        None => true,
        Some(f) => {
            let c = c_text(piece);
            let _inside = CallbackScope::enter(shared);
            let go = f(user_data, c.as_ptr(), c.as_bytes().len());
            stopped_by_callback |= !go;
            go
        }
    })?;
    if let Some(h) = history {
        *h = [ids.clone(), g.generated_ids.clone()].concat();
        if let Some(e) = tok.eos_id() {
            h.push(e);
        }
    }
    *out = ResultData::handle(g, stopped_by_callback);
    Ok(())
}

/// Generates a continuation of `prompt` (prompt style applied unless `params->raw`).
#[no_mangle]
pub unsafe extern "C" fn graftlm_generate(
    model: *const graftlm_model,
    prompt: *const c_char,
    params: *const graftlm_gen_params,
    out: *mut *mut graftlm_result,
) -> graftlm_status {
    guard(|| {
        run(
            &*model_of(model)?,
            prompt,
            params,
            None,
            std::ptr::null_mut(),
            None,
            out,
        )
    })
}

/// Like `graftlm_generate`, calling `cb(user_data, piece, len)` for each new piece of text.
#[no_mangle]
pub unsafe extern "C" fn graftlm_generate_stream(
    model: *const graftlm_model,
    prompt: *const c_char,
    params: *const graftlm_gen_params,
    cb: graftlm_stream_cb,
    user_data: *mut c_void,
    out: *mut *mut graftlm_result,
) -> graftlm_status {
    guard(|| {
        if cb.is_none() {
            return Err(Error::invalid("cb", "is NULL"));
        }
        run(&*model_of(model)?, prompt, params, cb, user_data, None, out)
    })
}

// The pointers the accessors return point into data the registry keeps until the handle is
// freed; they are valid while the result lives.

/// The generated text (valid while the result lives), or NULL for a NULL, freed or unknown
/// result.
#[no_mangle]
pub extern "C" fn graftlm_result_text(result: *const graftlm_result) -> *const c_char {
    result_of(result)
        .map(|r| r.text.as_ptr())
        .unwrap_or(std::ptr::null())
}

/// The generated token ids; `*len` receives their number (valid while the result lives). NULL
/// (and `*len` untouched) for a NULL `len` or a NULL, freed or unknown result.
#[no_mangle]
pub unsafe extern "C" fn graftlm_result_ids(
    result: *const graftlm_result,
    len: *mut usize,
) -> *const u32 {
    match (result_of(result), len.is_null()) {
        (Some(r), false) => {
            *len = r.ids.len();
            r.ids.as_ptr()
        }
        _ => std::ptr::null(),
    }
}

/// The prompt's token ids after styling; `*len` receives their number.
#[no_mangle]
pub unsafe extern "C" fn graftlm_result_prompt_ids(
    result: *const graftlm_result,
    len: *mut usize,
) -> *const u32 {
    match (result_of(result), len.is_null()) {
        (Some(r), false) => {
            *len = r.prompt_ids.len();
            r.prompt_ids.as_ptr()
        }
        _ => std::ptr::null(),
    }
}

/// Why generation stopped: `"max_tokens"`, `"eos"`, `"stop_string"` or `"callback"`.
#[no_mangle]
pub extern "C" fn graftlm_result_stop_reason(result: *const graftlm_result) -> *const c_char {
    result_of(result)
        .map(|r| r.stop_reason.as_ptr())
        .unwrap_or(std::ptr::null())
}

/// Releases a result. NULL, a freed or an unknown handle is ignored.
#[no_mangle]
pub extern "C" fn graftlm_result_free(result: *mut graftlm_result) {
    let _ = std::panic::catch_unwind(|| RESULTS.remove(result as usize));
}

/// Encodes `text` with the model's tokenizer (BOS as LitGPT decides, no prompt style). Writes up
/// to `capacity` ids to `ids` and their number to `*len`; if `capacity` is too small returns
/// `GRAFTLM_ERR_BUFFER_TOO_SMALL` with the needed number in `*len` (`ids` may be NULL then).
#[no_mangle]
pub unsafe extern "C" fn graftlm_tokenize(
    model: *const graftlm_model,
    text: *const c_char,
    ids: *mut u32,
    capacity: usize,
    len: *mut usize,
) -> graftlm_status {
    let mut needed = None;
    let st = guard(|| {
        let m = model_of(model)?;
        let text = arg_str(text, "text")?;
        out_ptr(len, "len")?;
        let v = m.tokenizer.encode(text)?;
        if v.len() > capacity || (ids.is_null() && !v.is_empty()) {
            needed = Some(v.len());
            return Err(Error::invalid(
                "capacity",
                format!("{} ids are needed", v.len()),
            ));
        }
        if !v.is_empty() {
            // SAFETY: `ids` is non-NULL here and the caller gives room for `capacity` ≥ len.
            std::ptr::copy_nonoverlapping(v.as_ptr(), ids, v.len());
        }
        *len = v.len();
        Ok(())
    });
    match needed {
        Some(n) => {
            *len = n;
            graftlm_status::GRAFTLM_ERR_BUFFER_TOO_SMALL
        }
        None => st,
    }
}

/// Decodes `n` ids to text (special tokens skipped). `*out` receives a string to free with
/// `graftlm_string_free`.
#[no_mangle]
pub unsafe extern "C" fn graftlm_detokenize(
    model: *const graftlm_model,
    ids: *const u32,
    n: usize,
    out: *mut *mut c_char,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        out_ptr(out, "out")?;
        if ids.is_null() && n > 0 {
            return Err(Error::invalid("ids", "is NULL"));
        }
        let slice = if n == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(ids, n)
        };
        let text = m.tokenizer.decode(slice)?;
        *out = c_text(&text).into_raw();
        Ok(())
    })
}

/// A new conversation on `model` (keeps the model alive until freed).
#[no_mangle]
pub unsafe extern "C" fn graftlm_session_new(
    model: *const graftlm_model,
    out: *mut *mut graftlm_session,
) -> graftlm_status {
    guard(|| {
        let shared = model_of(model)?;
        out_ptr(out, "out")?;
        *out = SESSIONS.insert(Mutex::new(SessionData {
            shared,
            history: Vec::new(),
        })) as *mut graftlm_session;
        Ok(())
    })
}

/// Runs `f` on the session behind `session`, refusing one that another thread is using.
fn with_session<T>(
    session: *mut graftlm_session,
    f: impl FnOnce(&mut SessionData) -> Result<T, Error>,
) -> Result<T, Error> {
    let s = SESSIONS.get(session as usize, "session")?;
    let mut data = s.try_lock().map_err(|e| match e {
        std::sync::TryLockError::WouldBlock => Error::Busy(
            "the session is in use by another call (a session is used by one thread at a time)"
                .into(),
        ),
        std::sync::TryLockError::Poisoned(_) => {
            Error::Unsupported("the session was left broken by an earlier panic".into())
        }
    })?;
    f(&mut data)
}

/// One conversation turn: the answer to `prompt` given the earlier turns, in the prompt style,
/// stopping at the style's stop tokens. `cb` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn graftlm_session_send(
    session: *mut graftlm_session,
    prompt: *const c_char,
    params: *const graftlm_gen_params,
    cb: graftlm_stream_cb,
    user_data: *mut c_void,
    out: *mut *mut graftlm_result,
) -> graftlm_status {
    guard(|| {
        with_session(session, |s| {
            let shared = s.shared.clone();
            run(
                &shared,
                prompt,
                params,
                cb,
                user_data,
                Some(&mut s.history),
                out,
            )
        })
    })
}

/// Forgets the conversation.
#[no_mangle]
pub unsafe extern "C" fn graftlm_session_reset(session: *mut graftlm_session) -> graftlm_status {
    guard(|| {
        with_session(session, |s| {
            s.history.clear();
            Ok(())
        })
    })
}

/// Releases a session (a call running on it in another thread keeps it alive until it returns).
/// NULL, a freed or an unknown handle is ignored.
#[no_mangle]
pub extern "C" fn graftlm_session_free(session: *mut graftlm_session) {
    let _ = std::panic::catch_unwind(|| SESSIONS.remove(session as usize));
}
