"""Where the CUDA sources and the CUTLASS headers are."""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def csrc_dir() -> Path:
    """csrc/ of a source checkout (editable install), else the copy a wheel ships as k2kernels/_csrc
    (pyproject.toml maps the package k2kernels._csrc to csrc/)."""
    for cand in (PACKAGE_DIR.parent / "csrc", PACKAGE_DIR / "_csrc"):
        if (cand / "torch_bindings.cpp").is_file():
            return cand
    raise FileNotFoundError("k2kernels: cannot find csrc/torch_bindings.cpp next to the package")


def cutlass_include_dir() -> Path | None:
    """third_party/cutlass/include when a user put a CUTLASS checkout there, else the nvidia-cutlass
    wheel's cutlass_library/source/include; None when neither exists."""
    checkout = PACKAGE_DIR.parent / "third_party" / "cutlass" / "include"
    if (checkout / "cutlass" / "version.h").is_file():
        return checkout
    spec = importlib.util.find_spec("cutlass_library")
    if spec and spec.origin:
        inc = Path(spec.origin).parent / "source" / "include"
        if (inc / "cutlass" / "version.h").is_file():
            return inc
    return None


def cutlass_version(include: Path | None) -> str:
    if include is None:
        return "none"
    text = (include / "cutlass" / "version.h").read_text()
    parts = []
    for key in ("MAJOR", "MINOR", "PATCH"):
        for line in text.splitlines():
            if line.startswith(f"#define CUTLASS_{key} "):
                parts.append(line.split()[2])
                break
    return ".".join(parts) or "unknown"
