"""Defines torch.ops.k2kernels.* and decides, per op and device, what runs.

- Schemas: read from csrc/torch_bindings.cpp (the one place they are written), defined here.
- CPU: the Python reference (k2kernels/reference/), so every op works on CPU tensors.
- Meta/Fake: k2kernels/fakes.py, for torch.compile and opcheck.
- CUDA: on the first CUDA call of any op, the kernel families are built (JIT, cached) and loaded;
  each library registers its own CUDA kernels. An op still without a CUDA kernel then runs the
  reference with a one-time warning (or raises under K2K_REQUIRE_KERNELS=1).

Environment knobs:
  K2K_FORCE_REFERENCE=1   never build or load kernels; CUDA tensors run the references
  K2K_REQUIRE_KERNELS=1   a missing CUDA kernel (or a failed build) is an error, not a fallback
  K2K_FAMILIES=a,b        load only these kernel families (the rest fall back)
  K2K_CUDA_ARCHS, K2K_CACHE_DIR, K2K_VERBOSE: see k2kernels/_build.py
"""
from __future__ import annotations

import os
import re
import threading
import warnings

import torch

from . import _paths, fakes, reference

NAMESPACE = "k2kernels"
_DEF_RE = re.compile(r'm\.def\("((?:[^"\\]|\\.)*)"\)')


def read_schemas() -> dict[str, str]:
    """{op name: schema} from the m.def("...") lines of csrc/torch_bindings.cpp."""
    text = (_paths.csrc_dir() / "torch_bindings.cpp").read_text()
    schemas = {}
    for m in _DEF_RE.finditer(text):
        schema = m.group(1).replace('\\"', '"')
        schemas[schema.split("(", 1)[0]] = schema
    if not schemas:
        raise RuntimeError("k2kernels: no schemas found in csrc/torch_bindings.cpp")
    return schemas


SCHEMAS = read_schemas()
OPS = tuple(SCHEMAS)


def _env_on(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def _qualified(op: str) -> str:
    return f"{NAMESPACE}::{op}"


def has_cuda_kernel(op: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(_qualified(op), "CUDA")


# ---- definitions ---------------------------------------------------------------------------------

def _already_defined(op: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(_qualified(op), "")
        return True
    except RuntimeError:
        return False


_libs: list[torch.library.Library] = []
if not all(_already_defined(op) for op in OPS):      # a C++ (CMake) build may have defined them
    _def = torch.library.Library(NAMESPACE, "DEF")
    for _op, _schema in SCHEMAS.items():
        _def.define(_schema)
    _libs.append(_def)

_cpu = torch.library.Library(NAMESPACE, "IMPL")
for _op in OPS:
    _cpu.impl(_op, getattr(reference, _op), "CPU")
    torch.library.register_fake(_qualified(_op))(getattr(fakes, _op))
_libs.append(_cpu)


# ---- CUDA: lazy build on first use ---------------------------------------------------------------

_lock = threading.RLock()
_state = {"loaded": False, "report": {}, "builds": []}
_trampolines: dict[str, torch.library.Library] = {}
_fallback_lib: torch.library.Library | None = None
_warned: set[str] = set()


def _make_trampoline(op: str):
    def first_cuda_call(*args, **kwargs):
        load_kernels()
        return getattr(torch.ops.k2kernels, op).default(*args, **kwargs)
    first_cuda_call.__name__ = f"{op}_first_cuda_call"
    return first_cuda_call


def _make_fallback(op: str, reason: str):
    ref = getattr(reference, op)
    if _env_on("K2K_REQUIRE_KERNELS"):
        def missing(*args, **kwargs):
            raise NotImplementedError(f"k2kernels.{op}: no CUDA kernel ({reason}) and K2K_REQUIRE_KERNELS=1")
        return missing

    def fallback(*args, **kwargs):
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"k2kernels.{op}: no CUDA kernel ({reason}); running the PyTorch reference "
                          f"(slow, syncs the device)", RuntimeWarning, stacklevel=2)
        return ref(*args, **kwargs)
    return fallback


for _op in OPS:
    if not has_cuda_kernel(_op):
        _lib = torch.library.Library(NAMESPACE, "IMPL")
        _lib.impl(_op, _make_trampoline(_op), "CUDA")
        _trampolines[_op] = _lib


def load_kernels() -> dict[str, str]:
    """Build/load the CUDA kernel families now (engines call this at start-up so the first forward
    pass is not the one that compiles). Returns {op: 'cuda kernel' | 'reference (<why>)'}."""
    global _fallback_lib
    with _lock:
        if _state["loaded"]:
            return dict(_state["report"])
        for lib in _trampolines.values():
            lib._destroy()
        _trampolines.clear()
        reason = "K2K_FORCE_REFERENCE=1"
        if not _env_on("K2K_FORCE_REFERENCE"):
            from . import _build
            fams = os.environ.get("K2K_FAMILIES")
            try:
                builds = _build.build_all(families=fams.split(",") if fams else None)
            except Exception as e:  # noqa: BLE001 - no nvcc, no GPU, ...: fall back, say why
                if _env_on("K2K_REQUIRE_KERNELS"):
                    raise
                builds = []
                reason = f"kernels could not be built: {e}"
                warnings.warn(f"k2kernels: {reason}", RuntimeWarning, stacklevel=2)
            _state["builds"] = builds
            for b in builds:
                if b.error and "no sources yet" not in b.error and "no kernels for these archs" not in b.error:
                    if _env_on("K2K_REQUIRE_KERNELS"):
                        raise RuntimeError(f"k2kernels: {b.error}")
                    warnings.warn(f"k2kernels: {b.error.splitlines()[0][:300]} (see K2K_VERBOSE=1)", RuntimeWarning)
            if builds:
                reason = "not built for this GPU's arch"
        _fallback_lib = torch.library.Library(NAMESPACE, "IMPL")
        report = {}
        for op in OPS:
            if has_cuda_kernel(op):
                report[op] = "cuda kernel"
            else:
                _fallback_lib.impl(op, _make_fallback(op, reason), "CUDA")
                report[op] = f"reference ({reason})"
        _state["loaded"] = True
        _state["report"] = report
        return dict(report)


def build_report():
    """The Built records of the last load_kernels() (build times, errors)."""
    return list(_state["builds"])
