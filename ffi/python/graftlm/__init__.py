"""graftlm through its C ABI (ctypes).

The shared library is found from ``$GRAFTLM_LIB``, next to this package, or in the Cargo target
directories of a source checkout (``cargo build`` produces ``libgraftlm.so``).

>>> with Model.load("examples/demo/model") as m:
...     print(m.generate("The Python interpreter", temperature=0, max_new_tokens=10).text)
"""

from __future__ import annotations

import ctypes
import operator
import os
import queue
import threading
from ctypes import POINTER, byref, c_bool, c_char_p, c_float, c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Union

__all__ = ["GraftlmError", "Model", "Result", "library_path", "set_threads", "threads"]


class GraftlmError(Exception):
    """A failed call: ``status`` is the C status number, ``message`` graftlm's explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (status {status})")
        self.status = status
        self.message = message


def library_path() -> Path:
    env = os.environ.get("GRAFTLM_LIB")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    names = ["libgraftlm.so", "libgraftlm.dylib", "graftlm.dll"]
    candidates = [here / n for n in names]
    for base in [here.parent.parent.parent / "target", Path.home() / ".cache/graftlm/target"]:
        for profile in ["release", "debug"]:
            candidates += [base / profile / n for n in names]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError("libgraftlm not found; build it with `cargo build` or set GRAFTLM_LIB")


class _Params(ctypes.Structure):
    _fields_ = [
        ("max_new_tokens", c_uint32),
        ("temperature", c_float),
        ("top_k", c_uint32),
        ("top_p", c_float),
        ("seed", c_uint64),
        ("raw", c_bool),
    ]


class _BatchRequest(ctypes.Structure):
    _fields_ = [("prompt", c_char_p), ("adapter", c_char_p)]


_CB = ctypes.CFUNCTYPE(c_bool, c_void_p, c_char_p, c_size_t)
_BATCH_CB = ctypes.CFUNCTYPE(c_bool, c_void_p, c_size_t, c_char_p, c_size_t)
_lib = ctypes.CDLL(str(library_path()))
_S = c_int32  # graftlm_status


def _sig(name, res, *args):
    f = getattr(_lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


_version = _sig("graftlm_version", c_char_p)
_last_error = _sig("graftlm_last_error", c_char_p)
_model_load = _sig("graftlm_model_load", _S, c_char_p, POINTER(c_void_p))
_model_load_with = _sig("graftlm_model_load_with", _S, c_char_p, c_char_p, POINTER(c_void_p))
_model_free = _sig("graftlm_model_free", None, c_void_p)
_adapter_load = _sig("graftlm_adapter_load", _S, c_void_p, c_char_p, c_int64, c_char_p, POINTER(c_void_p))
_adapter_free = _sig("graftlm_adapter_free", None, c_void_p)
_adapter_name = _sig("graftlm_adapter_name", c_char_p, c_void_p)
_attach = _sig("graftlm_model_attach", _S, c_void_p, c_void_p, c_float, c_bool)
_detach = _sig("graftlm_model_detach", _S, c_void_p, c_char_p)
_activate = _sig("graftlm_model_activate", _S, c_void_p, c_char_p, c_bool)
_set_scale = _sig("graftlm_model_set_scale", _S, c_void_p, c_char_p, c_float)
_merge = _sig("graftlm_model_merge", _S, c_void_p, c_char_p)
_unmerge = _sig("graftlm_model_unmerge", _S, c_void_p, c_char_p)
_export = _sig("graftlm_model_export_merged_with", _S, c_void_p, c_char_p, c_uint32)
_tokenize = _sig("graftlm_tokenize", _S, c_void_p, c_char_p, POINTER(c_uint32), c_size_t, POINTER(c_size_t))
_detokenize = _sig("graftlm_detokenize", _S, c_void_p, POINTER(c_uint32), c_size_t, POINTER(c_void_p))
_string_free = _sig("graftlm_string_free", None, c_void_p)
_params_default = _sig("graftlm_gen_params_default", _Params)
_generate = _sig("graftlm_generate", _S, c_void_p, c_char_p, POINTER(_Params), POINTER(c_void_p))
_generate_stream = _sig("graftlm_generate_stream", _S, c_void_p, c_char_p, POINTER(_Params), _CB, c_void_p, POINTER(c_void_p))
_generate_batch = _sig("graftlm_generate_batch", _S, c_void_p, POINTER(_BatchRequest), c_size_t, POINTER(_Params),
                      _BATCH_CB, c_void_p, POINTER(c_void_p))
_result_text = _sig("graftlm_result_text", c_char_p, c_void_p)
_result_ids = _sig("graftlm_result_ids", POINTER(c_uint32), c_void_p, POINTER(c_size_t))
_result_prompt_ids = _sig("graftlm_result_prompt_ids", POINTER(c_uint32), c_void_p, POINTER(c_size_t))
_result_stop = _sig("graftlm_result_stop_reason", c_char_p, c_void_p)
_result_free = _sig("graftlm_result_free", None, c_void_p)
_set_threads = _sig("graftlm_set_threads", _S, c_size_t)
_threads = _sig("graftlm_threads", c_size_t)

__version__ = _version().decode()


def _check(status: int) -> None:
    if status != 0:
        msg = _last_error()
        raise GraftlmError(status, msg.decode("utf-8", "replace") if msg else "unknown error")


def set_threads(n: int) -> None:
    """Sets how many threads the CPU kernels run on (1 to 1024). Call it before the first model is
    loaded and before threads(): the pool starts on first use and keeps its size (default:
    RAYON_NUM_THREADS, else one per logical CPU). Raises GraftlmError outside 1..1024 or when the
    pool already runs another size."""
    n = operator.index(n)
    if not 0 <= n < 2**64:
        raise GraftlmError(1, f"invalid argument `threads`: must be 1 to 1024, got {n}")
    _check(_set_threads(n))


def threads() -> int:
    """How many threads the CPU kernels run on. It starts the pool if it has not started, which
    fixes its size: call set_threads() first."""
    return int(_threads())


def _s(x: Union[str, os.PathLike, None]) -> Optional[bytes]:
    return None if x is None else os.fspath(x).encode("utf-8")


@dataclass
class Result:
    """A finished generation."""

    text: str
    ids: List[int]
    prompt_ids: List[int]
    stop_reason: str


def _take(ptr: c_void_p) -> Result:
    try:
        n = c_size_t()
        ids = _result_ids(ptr, byref(n))
        got = [ids[i] for i in range(n.value)]
        pids = _result_prompt_ids(ptr, byref(n))
        prompt = [pids[i] for i in range(n.value)]
        return Result(_result_text(ptr).decode(), got, prompt, _result_stop(ptr).decode())
    finally:
        _result_free(ptr)


class Model:
    """A loaded base model (CPU). Safe to share between threads; use as a context manager."""

    def __init__(self, handle: c_void_p):
        self._h = handle

    @classmethod
    def load(cls, path: Union[str, os.PathLike], weight_dtype: Optional[str] = None) -> "Model":
        """Loads a base checkpoint. ``weight_dtype``: how the weight matrices are held —
        "auto" (default: as stored when bf16/f16, else f32), "f32", "bf16", "f16", or "q8_0" /
        "q4_0" (the linear weights quantized to GGML's blocks at load; adapters attach
        separate)."""
        h = c_void_p()
        if weight_dtype is None:
            _check(_model_load(_s(path), byref(h)))
        else:
            _check(_model_load_with(_s(path), _s(weight_dtype), byref(h)))
        return cls(h)

    def close(self) -> None:
        if self._h:
            _model_free(self._h)
            self._h = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self) -> c_void_p:
        if not self._h:
            raise GraftlmError(1, "the model is closed")
        return self._h

    # Adapters -------------------------------------------------------------------------------
    def attach(self, path, name: Optional[str] = None, scale: float = 1.0, merge: bool = False, step: Optional[int] = None) -> str:
        """Reads an adapter (file, step folder, or run directory with ``step``) and attaches it.
        Returns the name it was attached under."""
        a = c_void_p()
        _check(_adapter_load(self._handle(), _s(path), -1 if step is None else int(step), _s(name), byref(a)))
        try:
            attached = _adapter_name(a).decode()
            _check(_attach(self._handle(), a, float(scale), bool(merge)))
            return attached
        finally:
            _adapter_free(a)

    def detach(self, name: str) -> None:
        _check(_detach(self._handle(), _s(name)))

    def activate(self, name: str, active: bool = True) -> None:
        _check(_activate(self._handle(), _s(name), active))

    def set_scale(self, name: str, scale: float) -> None:
        _check(_set_scale(self._handle(), _s(name), float(scale)))

    def merge(self, name: Optional[str] = None) -> None:
        _check(_merge(self._handle(), _s(name)))

    def unmerge(self, name: Optional[str] = None) -> None:
        _check(_unmerge(self._handle(), _s(name)))

    def export_merged(self, out_dir, force: bool = False) -> None:
        """Writes the base with the active adapters folded in as a Hugging Face checkpoint.

        ``out_dir`` must be absent or empty unless ``force`` (which replaces it whole); it must
        not be, hold or lie inside the base or an adapter. It appears whole or not at all."""
        _check(_export(self._handle(), _s(out_dir), 1 if force else 0))

    # Tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> List[int]:
        n = c_size_t()
        st = _tokenize(self._handle(), _s(text), None, 0, byref(n))
        if st not in (0, 9):
            _check(st)
        buf = (c_uint32 * max(n.value, 1))()
        _check(_tokenize(self._handle(), _s(text), buf, n.value, byref(n)))
        return list(buf[: n.value])

    def detokenize(self, ids: Sequence[int]) -> str:
        arr = (c_uint32 * max(len(ids), 1))(*ids)
        out = c_void_p()
        _check(_detokenize(self._handle(), arr, len(ids), byref(out)))
        try:
            return ctypes.string_at(out).decode()
        finally:
            _string_free(out)

    # Generation -----------------------------------------------------------------------------
    def generate(self, prompt: str, max_new_tokens: int = 50, temperature: float = 0.8, top_k: Optional[int] = 50,
                 top_p: float = 1.0, seed: int = 1234, raw: bool = False, stream: bool = False):
        """Generates a continuation. Returns a :class:`Result`, or with ``stream=True`` a generator of
        text pieces (its ``.result`` attribute is not available; use the pieces)."""
        p = _params_default()
        p.max_new_tokens, p.temperature, p.top_k = int(max_new_tokens), float(temperature), int(top_k or 0)
        p.top_p, p.seed, p.raw = float(top_p), int(seed), bool(raw)
        if stream:
            return self._stream(prompt, p)
        out = c_void_p()
        _check(_generate(self._handle(), _s(prompt), byref(p), byref(out)))
        return _take(out)

    def generate_batch(self, prompts: Sequence[str], adapters: Optional[Sequence[Optional[str]]] = None,
                       max_new_tokens: int = 50, temperature: float = 0.8, top_k: Optional[int] = 50,
                       top_p: float = 1.0, seed: int = 1234, raw: bool = False,
                       on_text: Optional[Callable[[int, str], bool]] = None) -> List[Result]:
        """Generates a continuation for each prompt, all decoded together (one forward per step
        for the whole batch), prompt ``i`` with the attached adapter named ``adapters[i]`` (``None``:
        the base). Each result equals :meth:`generate` with only that adapter active.
        ``on_text(i, piece)`` streams request ``i``; returning ``False`` stops that request."""
        prompts = list(prompts)
        adapters = list(adapters) if adapters is not None else [None] * len(prompts)
        if len(adapters) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(adapters)} adapter choices")
        p = _params_default()
        p.max_new_tokens, p.temperature, p.top_k = int(max_new_tokens), float(temperature), int(top_k or 0)
        p.top_p, p.seed, p.raw = float(top_p), int(seed), bool(raw)
        n = len(prompts)
        reqs = (_BatchRequest * max(n, 1))(*[_BatchRequest(_s(t), _s(a)) for t, a in zip(prompts, adapters)])
        errors: List[BaseException] = []

        def on_piece(_ud, i, piece, length):
            if on_text is None:
                return True
            try:
                return bool(on_text(i, ctypes.string_at(piece, length).decode()))
            except BaseException as e:  # re-raised after the call; stops that request
                errors.append(e)
                return False

        cb = _BATCH_CB(on_piece)
        out = (c_void_p * max(n, 1))()
        _check(_generate_batch(self._handle(), reqs, n, byref(p), cb, None, out))
        results = [_take(c_void_p(out[i])) for i in range(n)]
        if errors:
            raise errors[0]
        return results

    def _stream(self, prompt: str, p: _Params) -> Iterator[str]:
        q: "queue.Queue" = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_piece(_ud, piece, length):
            q.put(ctypes.string_at(piece, length).decode())
            return not stop.is_set()

        cb = _CB(on_piece)
        handle = self._handle()

        def run():
            out = c_void_p()
            try:
                _check(_generate_stream(handle, _s(prompt), byref(p), cb, None, byref(out)))
                _take(out)
                q.put(done)
            except BaseException as e:  # delivered to the consumer
                q.put(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            t.join()
