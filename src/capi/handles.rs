//! Model and adapter handles, and the adapter operations.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::registry::Registry;
use super::{arg_str, graftlm_status, guard, opt_str, out_ptr};
use crate::adapters::{self, Adapter, Mode, StepChoice};
use crate::backend::DefaultCpu;
use crate::builder::Plan;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::model::{Model, WeightDtype};
use crate::prompt::PromptStyle;
use crate::tokenizer::Tokenizer;

/// Everything a loaded model needs; behind one lock.
pub(crate) struct ModelState {
    pub model: Model<DefaultCpu>,
    pub checkpoint: Checkpoint,
    pub style: PromptStyle,
    /// Host copies of attached adapters (for export), with scales.
    pub adapters: Vec<(Adapter, f32)>,
}

pub(crate) struct Shared {
    pub state: RwLock<ModelState>,
    pub tokenizer: Tokenizer,
}

/// A loaded base model with its tokenizer and any attached adapters. Thread-safe.
pub struct graftlm_model {
    _opaque: [u8; 0],
}

/// An adapter read from disk and checked against the model it was loaded for. Immutable.
pub struct graftlm_adapter {
    _opaque: [u8; 0],
}

/// What a `graftlm_adapter` handle stands for.
pub(crate) struct AdapterData {
    pub(crate) adapter: Adapter,
    name: CString,
}

pub(crate) static MODELS: Registry<Shared> = Registry::new(1, "graftlm_model");
static ADAPTERS: Registry<AdapterData> = Registry::new(2, "graftlm_adapter");

thread_local! {
    /// The models whose streaming callback this thread is running (their lock is held below).
    static IN_CALLBACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread as inside a streaming callback of `shared` while it lives.
pub(crate) struct CallbackScope(usize);

impl CallbackScope {
    pub(crate) fn enter(shared: &Shared) -> Self {
        let id = shared as *const Shared as usize;
        IN_CALLBACK.with(|v| v.borrow_mut().push(id));
        Self(id)
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        IN_CALLBACK.with(|v| {
            let mut v = v.borrow_mut();
            if let Some(i) = v.iter().rposition(|&x| x == self.0) {
                v.remove(i);
            }
        });
    }
}

impl Shared {
    /// Refuses a call that would wait for the lock this thread already holds below a callback.
    fn not_reentrant(&self) -> Result<(), Error> {
        let id = self as *const Shared as usize;
        if IN_CALLBACK.with(|v| v.borrow().contains(&id)) {
            return Err(Error::Busy(
                "called from inside a streaming callback of this same model, which holds its lock; \
                 make the call after the generation returns"
                    .into(),
            ));
        }
        Ok(())
    }
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, ModelState>, Error> {
        self.not_reentrant()?;
        self.state.read().map_err(|_| {
            Error::Unsupported("the model lock is poisoned by an earlier panic".into())
        })
    }
    fn write(&self) -> Result<RwLockWriteGuard<'_, ModelState>, Error> {
        self.not_reentrant()?;
        self.state.write().map_err(|_| {
            Error::Unsupported("the model lock is poisoned by an earlier panic".into())
        })
    }
}

/// The model behind a handle.
pub(crate) fn model_of(m: *const graftlm_model) -> Result<Arc<Shared>, Error> {
    MODELS.get(m as usize, "model")
}

/// Loads the base checkpoint at `path` (LitGPT or Hugging Face layout) on the CPU, holding its
/// weight matrices as stored when they are bf16 or f16 (same results as f32, half the memory).
/// `*out` receives a handle to free with `graftlm_model_free`.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_load(
    path: *const c_char,
    out: *mut *mut graftlm_model,
) -> graftlm_status {
    guard(|| load(arg_str(path, "path")?, WeightDtype::Auto, out))
}

/// `graftlm_model_load` choosing how the weight matrices are held: `weight_dtype` is "auto"
/// (as `graftlm_model_load`; also NULL), "f32", "bf16", "f16", "q8_0" or "q4_0". Arithmetic is
/// f32 either way; bf16/f16 halve memory and roughly double decoding speed, rounding an f32
/// checkpoint's weights; q8_0/q4_0 quantize the linear weights to GGML's blocks at load (an
/// adapter then attaches separate: merging into them is refused).
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_load_with(
    path: *const c_char,
    weight_dtype: *const c_char,
    out: *mut *mut graftlm_model,
) -> graftlm_status {
    guard(|| {
        let path = arg_str(path, "path")?;
        let precision = match opt_str(weight_dtype, "weight_dtype")? {
            Some(d) => d.parse()?,
            None => WeightDtype::Auto,
        };
        load(path, precision, out)
    })
}

unsafe fn load(
    path: &str,
    precision: WeightDtype,
    out: *mut *mut graftlm_model,
) -> Result<(), Error> {
    out_ptr(out, "out")?;
    let checkpoint = Checkpoint::open(path)?;
    let tokenizer = Tokenizer::from_dir(&checkpoint.dir)?;
    let style = PromptStyle::resolve(&checkpoint.dir, &checkpoint.config.name)?;
    let model = checkpoint.load_as::<DefaultCpu>(&Default::default(), precision)?;
    let h = MODELS.insert(Shared {
        state: RwLock::new(ModelState {
            model,
            checkpoint,
            style,
            adapters: Vec::new(),
        }),
        tokenizer,
    });
    *out = h as *mut graftlm_model;
    Ok(())
}

/// Releases a model. Sessions created from it keep it alive until they are freed, and calls
/// running on it in other threads until they return. NULL, a freed or an unknown handle is
/// ignored; any later use of the handle is `GRAFTLM_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn graftlm_model_free(model: *mut graftlm_model) {
    let _ = std::panic::catch_unwind(|| MODELS.remove(model as usize));
}

/// Reads an adapter for `model`: a weights file, a step folder, or a run directory (`step` ≥ 0
/// picks that step; -1 the latest). `name` may be NULL (the folder name is used).
#[no_mangle]
pub unsafe extern "C" fn graftlm_adapter_load(
    model: *const graftlm_model,
    path: *const c_char,
    step: i64,
    name: *const c_char,
    out: *mut *mut graftlm_adapter,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let path = arg_str(path, "path")?;
        let name = opt_str(name, "name")?;
        out_ptr(out, "out")?;
        let step = match step {
            -1 => None,
            s if s >= 0 => Some(StepChoice::Step(s as u64)),
            s => {
                return Err(Error::invalid(
                    "step",
                    format!("{s} (use -1 for the latest)"),
                ))
            }
        };
        let cfg = m.read()?.checkpoint.config.clone();
        let adapter = adapters::read(&adapters::locate(Path::new(path), step)?, &cfg, name)?;
        let name = super::c_text(&adapter.name);
        *out = ADAPTERS.insert(AdapterData { adapter, name }) as *mut graftlm_adapter;
        Ok(())
    })
}

/// Releases an adapter (attached copies stay attached). NULL, a freed or an unknown handle is
/// ignored.
#[no_mangle]
pub extern "C" fn graftlm_adapter_free(adapter: *mut graftlm_adapter) {
    let _ = std::panic::catch_unwind(|| ADAPTERS.remove(adapter as usize));
}

/// The adapter's name (valid while the adapter lives), or NULL for a NULL, freed or unknown
/// handle.
#[no_mangle]
pub extern "C" fn graftlm_adapter_name(adapter: *const graftlm_adapter) -> *const c_char {
    match ADAPTERS.get(adapter as usize, "adapter") {
        // The registry keeps the data (and so the string) until the handle is freed.
        Ok(a) => a.name.as_ptr(),
        Err(_) => std::ptr::null(),
    }
}

/// Attaches `adapter` with `scale`, separate (`merged` false) or folded into the weights.
/// Waits for running generations. On error the model is unchanged.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_attach(
    model: *const graftlm_model,
    adapter: *const graftlm_adapter,
    scale: f32,
    merged: bool,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let a = ADAPTERS.get(adapter as usize, "adapter")?;
        let mut st = m.write()?;
        let mode = if merged { Mode::Merged } else { Mode::Separate };
        st.model.attach(&a.adapter, scale, mode)?;
        st.adapters.push((a.adapter.clone(), scale));
        Ok(())
    })
}

/// Detaches the adapter called `name`.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_detach(
    model: *const graftlm_model,
    name: *const c_char,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let name = arg_str(name, "name")?;
        let mut st = m.write()?;
        st.model.detach(name)?;
        st.adapters.retain(|(a, _)| a.name != name);
        Ok(())
    })
}

/// Turns the adapter `name` on or off.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_activate(
    model: *const graftlm_model,
    name: *const c_char,
    active: bool,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let name = arg_str(name, "name")?;
        let mut st = m.write()?;
        st.model.set_active(name, active)
    })
}

/// Sets the scale of the adapter `name`.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_set_scale(
    model: *const graftlm_model,
    name: *const c_char,
    scale: f32,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let name = arg_str(name, "name")?;
        let mut st = m.write()?;
        st.model.set_scale(name, scale)?;
        if let Some(e) = st.adapters.iter_mut().find(|(a, _)| a.name == name) {
            e.1 = scale;
        }
        Ok(())
    })
}

/// Folds adapter `name` (or, with NULL, every active adapter) into the weights.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_merge(
    model: *const graftlm_model,
    name: *const c_char,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let name = opt_str(name, "name")?;
        let mut st = m.write()?;
        match name {
            Some(n) => st.model.set_merged(n, true),
            None => st.model.merge_all(),
        }
    })
}

/// Takes adapter `name` (or, with NULL, every merged adapter) back out of the weights.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_unmerge(
    model: *const graftlm_model,
    name: *const c_char,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        let name = opt_str(name, "name")?;
        let mut st = m.write()?;
        match name {
            Some(n) => st.model.set_merged(n, false),
            None => st.model.unmerge_all(),
        }
    })
}

/// Number of attached adapters.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_adapter_count(
    model: *const graftlm_model,
    out: *mut usize,
) -> graftlm_status {
    guard(|| {
        let m = model_of(model)?;
        out_ptr(out, "out")?;
        *out = m.read()?.model.grafts().len();
        Ok(())
    })
}

/// `graftlm_model_export_merged_with` flag: replace a non-empty `out_dir` whole.
pub const GRAFTLM_EXPORT_FORCE: u32 = 1;

/// Writes the base with every active adapter folded in as a Hugging Face checkpoint in `out_dir`,
/// which must be absent or empty (`graftlm_model_export_merged_with` can replace one). An
/// `out_dir` that is, holds or lies inside the base or an adapter, a symbolic link or a file is
/// refused before anything is written; the files go into a fresh directory beside `out_dir`,
/// renamed into place at the end, so `out_dir` appears whole or not at all.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_export_merged(
    model: *const graftlm_model,
    out_dir: *const c_char,
) -> graftlm_status {
    graftlm_model_export_merged_with(model, out_dir, 0)
}

/// `graftlm_model_export_merged` with `flags`: `GRAFTLM_EXPORT_FORCE` replaces a non-empty
/// `out_dir` whole. Unknown flags are `GRAFTLM_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn graftlm_model_export_merged_with(
    model: *const graftlm_model,
    out_dir: *const c_char,
    flags: u32,
) -> graftlm_status {
    guard(|| {
        if flags & !GRAFTLM_EXPORT_FORCE != 0 {
            return Err(Error::invalid("flags", format!("unknown flags {flags:#x}")));
        }
        let opts = crate::export::ExportOptions::default().force(flags & GRAFTLM_EXPORT_FORCE != 0);
        let m = model_of(model)?;
        let dir = arg_str(out_dir, "out_dir")?;
        let st = m.read()?;
        let active: Vec<(Adapter, f32)> = st
            .adapters
            .iter()
            .filter(|(a, _)| {
                st.model
                    .grafts()
                    .iter()
                    .any(|g| g.name == a.name && g.active)
            })
            .map(|(a, _)| {
                let scale = st
                    .model
                    .grafts()
                    .iter()
                    .find(|g| g.name == a.name)
                    .map(|g| g.scale)
                    .unwrap_or(1.0);
                (a.clone(), scale)
            })
            .collect();
        let plan = Plan {
            checkpoint: st.checkpoint.clone(),
            base_from: "C API".into(),
            adapters: active,
            mode: Mode::Merged,
            weight_dtype: st.model.weight_dtype(),
        };
        crate::export::export_merged_with(&plan, Path::new(dir), &opts, &mut |_| {}).map(|_| ())
    })
}
