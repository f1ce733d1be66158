"""A compiled CPU kernel for the bag products ``U = H @ E`` and ``dE = H^T @ dU`` (float32 and float64).

Both directions walk the *transposed* bags (for each table row ``v``, the images that hold token ``v``), so
every table row is read once per forward and every gradient row written once per backward:

* forward (scatter): ``U[b] += w * E[v]`` for each (v, b, w); ``U`` (batch x d, 2.4 MB at the paper's
  shape) stays in cache while the 38 MB table streams through once;
* backward (gather): ``dE[v] = sum_b w * dU[b]``, accumulated in registers, 64 floats at a time.

Work is split over ``d`` between threads (each thread owns a column slice of ``U`` or ``dE``, so no two
threads write the same memory), and within a thread the forward blocks ``d`` so its slice of ``U`` stays in
the L2 cache.  The threads are Python threads calling into the library through ctypes, which releases the GIL.

The C source below is compiled on first use with the system C compiler (``cc -O3 -march=native``) into
``<cache>/kernels/`` (``$TOKALIGN_CACHE``, see :func:`tokalign.align.lm.load.default_cache_root`), keyed by
the source, the flags and the CPU; a machine without a compiler falls back to PyTorch's sparse CSR products
(:func:`available` says which).  ``tests/align/fit/test_bags.py`` checks both against the plain reference.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)

L2_BUDGET = 5 << 18  # bytes of U a thread accumulates per pass over the bags (1.25 MB: stays in L2)
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-fno-math-errno")

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#define KERNELS(T, SUF, W)                                                                              \
typedef T vec_##SUF __attribute__((vector_size(W * sizeof(T)), aligned(sizeof(T))));                    \
void bag_forward_##SUF(const T* E, int64_t d, const int64_t* crow_t, const int64_t* rows_t,             \
                       const T* w_t, int64_t V, T* out, int64_t B, int64_t lo, int64_t hi, int64_t blk) { \
  for (int64_t b = 0; b < B; b++) memset(out + b * d + lo, 0, (size_t)(hi - lo) * sizeof(T));          \
  for (int64_t c = lo; c < hi; c += blk) {                                                              \
    int64_t n = (hi - c < blk) ? hi - c : blk, nv = n / W;                                              \
    for (int64_t v = 0; v < V; v++) {                                                                   \
      const T* e = E + v * d + c;                                                                       \
      for (int64_t k = crow_t[v]; k < crow_t[v + 1]; k++) {                                             \
        T w = w_t[k]; T* o = out + rows_t[k] * d + c;                                                   \
        for (int64_t j = 0; j < nv; j++) *(vec_##SUF*)(o + W * j) += w * *(const vec_##SUF*)(e + W * j); \
        for (int64_t j = W * nv; j < n; j++) o[j] += w * e[j];                                          \
      }                                                                                                 \
    }                                                                                                   \
  }                                                                                                     \
}                                                                                                       \
void bag_backward_##SUF(const T* G, int64_t d, const int64_t* crow_t, const int64_t* rows_t,            \
                        const T* w_t, int64_t V, T* out, int64_t lo, int64_t hi) {                      \
  for (int64_t v = 0; v < V; v++) {                                                                     \
    int64_t k0 = crow_t[v], k1 = crow_t[v + 1]; T* o = out + v * d;                                     \
    int64_t c = lo;                                                                                     \
    for (; c + 4 * W <= hi; c += 4 * W) {                                                               \
      vec_##SUF a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                 \
      for (int64_t k = k0; k < k1; k++) {                                                               \
        T w = w_t[k]; const T* g = G + rows_t[k] * d + c;                                               \
        a0 += w * *(const vec_##SUF*)g; a1 += w * *(const vec_##SUF*)(g + W);                           \
        a2 += w * *(const vec_##SUF*)(g + 2 * W); a3 += w * *(const vec_##SUF*)(g + 3 * W);             \
      }                                                                                                 \
      *(vec_##SUF*)(o + c) = a0; *(vec_##SUF*)(o + c + W) = a1;                                         \
      *(vec_##SUF*)(o + c + 2 * W) = a2; *(vec_##SUF*)(o + c + 3 * W) = a3;                             \
    }                                                                                                   \
    for (; c < hi; c++) {                                                                               \
      T a = 0;                                                                                          \
      for (int64_t k = k0; k < k1; k++) a += w_t[k] * G[rows_t[k] * d + c];                             \
      o[c] = a;                                                                                         \
    }                                                                                                   \
  }                                                                                                     \
}
KERNELS(float, f32, 16)
KERNELS(double, f64, 8)
"""

_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_lock = threading.Lock()
_state: dict = {}


def _cpu_identity() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "|".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _library_path() -> Path:
    from tokalign.align.lm.load import default_cache_root

    key = hashlib.sha256("\0".join([_SOURCE, *FLAGS, _cpu_identity()]).encode()).hexdigest()[:16]
    return default_cache_root() / "kernels" / f"bags-{key}.so"


def _compile(path: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler found")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        source, built = Path(tmp) / "bags.c", Path(tmp) / "bags.so"
        source.write_text(_SOURCE)
        subprocess.run([compiler, *FLAGS, str(source), "-o", str(built)], check=True, capture_output=True, timeout=120)
        os.replace(built, path)  # atomic: concurrent builders race harmlessly


def _load():
    """The ctypes library, compiling it the first time; ``None`` where that fails (logged once)."""
    with _lock:
        if "lib" not in _state:
            _state["lib"] = None
            try:
                path = _library_path()
                if not path.is_file():
                    _compile(path)
                lib = ctypes.CDLL(str(path))
                for name in ("bag_forward_f32", "bag_forward_f64", "bag_backward_f32", "bag_backward_f64"):
                    getattr(lib, name).restype = None
                _state["lib"] = lib
            except (OSError, subprocess.SubprocessError) as exc:
                log.info("compiled bag kernel unavailable (%s); using PyTorch's sparse products", exc)
    return _state["lib"]


def available() -> bool:
    """Whether the compiled kernel loads on this machine (compiling it if needed)."""
    return _load() is not None


def supports(table: torch.Tensor) -> bool:
    return table.device.type == "cpu" and table.dtype in _DTYPES and available()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        if _state.get("workers") != workers:
            _state["pool"], _state["workers"] = ThreadPoolExecutor(workers, thread_name_prefix="bags"), workers
    return _state["pool"]


def _slices(d: int, parts: int, align: int) -> list[tuple[int, int]]:
    cuts = sorted({0, d, *((d * i // parts) // align * align for i in range(1, parts))})
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _run(calls) -> None:
    if len(calls) == 1:
        fn, args = calls[0]
        fn(*args)
        return
    pool = _pool(torch.get_num_threads())
    for future in [pool.submit(fn, *args) for fn, args in calls]:
        future.result()


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def forward(table: torch.Tensor, crow_t: torch.Tensor, rows_t: torch.Tensor, weights_t: torch.Tensor,
            batch: int) -> torch.Tensor:
    """``U`` (batch, d) with ``U[b] = sum w * table[v]`` over the transposed bags; inputs contiguous, CPU."""
    lib, suffix = _load(), _DTYPES[table.dtype]
    table, weights_t = table.contiguous(), weights_t.to(table.dtype).contiguous()
    vocab, d = table.shape
    out = torch.empty(batch, d, dtype=table.dtype)
    i64 = ctypes.c_int64
    fn = getattr(lib, f"bag_forward_{suffix}")
    block = max(16, min(d, L2_BUDGET // max(1, batch * table.element_size())) // 16 * 16)
    calls = [(fn, (_p(table), i64(d), _p(crow_t), _p(rows_t), _p(weights_t), i64(vocab), _p(out), i64(batch),
                   i64(lo), i64(hi), i64(block)))
             for lo, hi in _slices(d, max(1, torch.get_num_threads()), 16)]
    _run(calls)
    return out


def backward(grad_out: torch.Tensor, crow_t: torch.Tensor, rows_t: torch.Tensor, weights_t: torch.Tensor,
             vocab: int) -> torch.Tensor:
    """``dE`` (vocab, d) with ``dE[v] = sum w * grad_out[b]`` over the transposed bags (every row written)."""
    lib, suffix = _load(), _DTYPES[grad_out.dtype]
    grad_out, weights_t = grad_out.contiguous(), weights_t.to(grad_out.dtype).contiguous()
    d = grad_out.shape[1]
    out = torch.empty(vocab, d, dtype=grad_out.dtype)
    i64 = ctypes.c_int64
    fn = getattr(lib, f"bag_backward_{suffix}")
    calls = [(fn, (_p(grad_out), i64(d), _p(crow_t), _p(rows_t), _p(weights_t), i64(vocab), _p(out), i64(lo), i64(hi)))
             for lo, hi in _slices(d, max(1, torch.get_num_threads()), 64)]
    _run(calls)
    return out
