"""Per-kernel resource usage of a built library: registers, stack, spills (LOCAL), static shared
memory from `cuobjdump --dump-resource-usage`, and the dynamic budgets kernels declare with
K2K_SMEM_BUDGET (read from the library's k2k_smem_budgets_<family> table)."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class KernelUsage:
    arch: str
    kernel: str
    registers: int
    stack: int
    local: int          # bytes of local memory per thread: spills (and local arrays)
    static_smem: int


def find_cuobjdump() -> str | None:
    """CUDA_HOME/bin, PATH, the nvidia-cuda-cuobjdump wheel, or the copy triton ships."""
    cands = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "cuobjdump"]
    on_path = shutil.which("cuobjdump")
    if on_path:
        cands.append(Path(on_path))
    for mod, rel in (("nvidia", "cu13/bin/cuobjdump"), ("triton", "backends/nvidia/bin/cuobjdump")):
        try:
            pkg = __import__(mod)
            for base in getattr(pkg, "__path__", []):
                cands.append(Path(base) / rel)
        except ImportError:
            pass
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def _short(name: str) -> str:
    """void k2k::(anonymous namespace)::foo_kernel<8>(args...) -> foo_kernel<8>"""
    name = name.replace("(anonymous namespace)::", "")
    depth, cut = 0, len(name)
    for i in range(len(name) - 1, -1, -1):        # drop the trailing (argument list)
        if name[i] == ")":
            depth += 1
        elif name[i] == "(":
            depth -= 1
            if depth == 0:
                cut = i
                break
    name = name[:cut]
    if name.startswith("void "):
        name = name[5:]
    head = name.split("<", 1)[0]
    return name[head.rfind("::") + 2:] if "::" in head else name


def kernel_usage(library: Path) -> list[KernelUsage]:
    tool = find_cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found (CUDA toolkit, nvidia-cuda-cuobjdump wheel or triton)")
    text = subprocess.run([tool, "--dump-resource-usage", str(library)], capture_output=True, text=True,
                          check=True).stdout
    rows, arch, func = [], "?", None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("arch ="):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith("Function "):
            func = line[len("Function "):].rstrip(":")
        elif func and line.startswith("REG:"):
            f = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            rows.append(KernelUsage(arch, func, int(f.get("REG", 0)), int(f.get("STACK", 0)),
                                    int(f.get("LOCAL", 0)), int(f.get("SHARED", 0))))
            func = None
    names = _demangle([r.kernel for r in rows])
    for r, n in zip(rows, names):
        r.kernel = _short(n)
    return rows


def declared_budgets(library: Path, family: str) -> list[tuple[str, int]]:
    """(tag, bytes) pairs declared with K2K_SMEM_BUDGET in this family's library."""
    lib = ctypes.CDLL(str(library))
    try:
        fn = getattr(lib, f"k2k_smem_budgets_{family}")
    except AttributeError:
        return []
    fn.restype = ctypes.c_int
    cap = 256
    tags = (ctypes.c_char_p * cap)()
    sizes = (ctypes.c_int * cap)()
    n = fn(tags, sizes, cap)
    return [(tags[i].decode(), sizes[i]) for i in range(min(n, cap))]
