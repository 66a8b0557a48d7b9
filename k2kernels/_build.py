"""JIT build of the CUDA kernels: one shared library per kernel family (csrc/<family>/).

One library per family so that a broken or slow family (the CUTLASS SM120 one) never blocks the
others, and a change in one family rebuilds only that family. Each library registers its CUDA
implementations with TORCH_LIBRARY_IMPL; the schemas come from csrc/torch_bindings.cpp (_registry).

Cache: $K2K_CACHE_DIR (default ~/.cache/k2kernels)/<family>-<key>/, where key hashes every source and
header of the family plus csrc/common/ and torch_bindings.cpp, nvcc's version, torch's version and
CUDA, the CUTLASS version, the arch list and the flags. A file lock makes concurrent first use safe;
a build happens in a temporary folder that is renamed into place only when complete; an artifact that
fails to load is deleted and rebuilt once.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import _paths

SM120_SMEM_LIMIT = 101_376       # bytes of shared memory per block on SM120 (RTX PRO 6000 / 5090)


def _default_cuda_home() -> None:
    """torch guesses CUDA_HOME=/usr/local when no GPU runtime is found; prefer a real toolkit root
    (one with bin/nvcc and include/cuda_runtime.h): /usr/local/cuda, else the nvcc on PATH."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    candidates = [Path("/usr/local/cuda")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
    for root in candidates:
        if (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists():
            os.environ["CUDA_HOME"] = str(root)
            return


_default_cuda_home()


@dataclass(frozen=True)
class Family:
    name: str
    archs: tuple[str, ...] | None = None     # archs this family can build for; None = all
    needs_cutlass: bool = False


# The kernel families, one folder each under csrc/. A family with no sources yet is skipped.
FAMILIES = (
    Family("quant"),
    Family("attention", needs_cutlass=True),   # CuTe's wgmma atoms (the sm_90a prefill kernel)
    Family("routing"),
    Family("moe_gemm", needs_cutlass=True),
    Family("cutlass_sm120", archs=("sm_120a", "sm_121a"), needs_cutlass=True),
    Family("fused_moe"),
)

COMMON_NVCC_FLAGS = ("-O3", "--expt-relaxed-constexpr", "-lineinfo", "-DNDEBUG",
                     "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                     "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__")
COMMON_CXX_FLAGS = ("-O3",)


def _promote_libstdcxx() -> None:
    """Put the process's libstdc++ in the global symbol scope before loading our libraries.

    torch's extension flags compile our launchers as C++20, where libstdc++ no longer declares its
    string/stream templates `extern`, so each library carries weak copies of them, including the
    static `locale::id` members. Unless libstdc++ is already global, our copies bind to themselves,
    their facet ids never get initialised, and the first message formatted with an ostream (every
    TORCH_CHECK with a number in it) segfaults (seen on the H200 with torch 2.11, 2026-11-29).
    With libstdc++ global, the dynamic linker unifies the weak copies with libstdc++'s own."""
    import ctypes
    try:
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass


def log(msg: str) -> None:
    print(f"k2kernels: {msg}", file=sys.stderr, flush=True)


# ---- archs ---------------------------------------------------------------------------------------

def arch_for_capability(major: int, minor: int) -> str:
    """sm_90 -> sm_90a (wgmma/TMA need the 'a' target); sm_12x -> sm_12xa: CUTLASS 4.2 gates its SM120
    block-scaled MMA on the arch-specific feature macro, so 'a' is what its kernels compile under
    (a 120f family build would also serve sm_121, but we cannot check CUTLASS 4.2 enables its
    kernels there); sm_100 and everything older -> the plain target (mma.sync kernels only)."""
    if major in (9, 12):
        return f"sm_{major}{minor}a"
    return f"sm_{major}{minor}"


def parse_archs(text: str) -> tuple[str, ...]:
    archs = []
    for a in text.replace(";", ",").split(","):
        a = a.strip().lower()
        if not a:
            continue
        if not a.startswith("sm_"):
            a = "sm_" + a.replace(".", "")
        digits = a[3:].rstrip("af")
        if not digits.isdigit():
            raise ValueError(f"k2kernels: cannot read arch {a!r}; write e.g. sm_90a,sm_120a")
        if a == "sm_90":        # Hopper is built as sm_90a: the moe_gemm wgmma kernel needs it (its sm_90 build is an error)
            a = "sm_90a"
        archs.append(a)
    if not archs:
        raise ValueError(f"k2kernels: empty arch list {text!r}")
    return tuple(dict.fromkeys(archs))


def target_archs() -> tuple[str, ...]:
    """$K2K_CUDA_ARCHS (e.g. 'sm_90a,sm_120a') or the visible GPU's arch."""
    env = os.environ.get("K2K_CUDA_ARCHS")
    if env:
        return parse_archs(env)
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("k2kernels: no GPU visible and K2K_CUDA_ARCHS is not set; nothing to build for")
    return (arch_for_capability(*torch.cuda.get_device_capability()),)


def gencode_flags(archs) -> list[str]:
    flags = []
    for a in archs:
        num = a[3:]
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
    return flags


# ---- cache key -----------------------------------------------------------------------------------

def family_sources(fam: Family) -> list[Path]:
    d = _paths.csrc_dir() / fam.name
    if not d.is_dir():
        return []
    srcs = sorted(p for p in d.rglob("*") if p.suffix in (".cu", ".cpp") and p.is_file())
    if not srcs:
        return []
    common = sorted(p for p in (_paths.csrc_dir() / "common").rglob("*") if p.suffix in (".cu", ".cpp"))
    return srcs + common


def _hashed_files(fam: Family) -> list[Path]:
    root = _paths.csrc_dir()
    files = [root / "torch_bindings.cpp"]
    for d in (root / fam.name, root / "common"):
        files += sorted(p for p in d.rglob("*") if p.is_file() and p.suffix in (".cu", ".cuh", ".cpp", ".h", ".hpp", ".inc"))
    return files


_NVCC_VERSION: str | None = None


def nvcc_version() -> str:
    global _NVCC_VERSION
    if _NVCC_VERSION is None:
        nvcc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
        try:
            _NVCC_VERSION = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True,
                                           check=True).stdout.strip().splitlines()[-1]
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"k2kernels: cannot run nvcc at {nvcc} ({e}); set CUDA_HOME") from e
    return _NVCC_VERSION


def cache_root() -> Path:
    return Path(os.environ.get("K2K_CACHE_DIR", Path.home() / ".cache" / "k2kernels"))


def family_archs(fam: Family, archs) -> tuple[str, ...]:
    return tuple(a for a in archs if fam.archs is None or a in fam.archs)


def build_key(fam: Family, archs, cflags, cuda_cflags) -> str:
    import torch
    h = hashlib.sha256()
    root = _paths.csrc_dir()
    for f in _hashed_files(fam):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    inc = _paths.cutlass_include_dir() if fam.needs_cutlass else None
    for item in (nvcc_version(), torch.__version__, str(torch.version.cuda),
                 _paths.cutlass_version(inc), str(inc), ",".join(archs), " ".join(cflags), " ".join(cuda_cflags)):
        h.update(b"\0" + item.encode())
    return h.hexdigest()[:16]


# ---- build + load --------------------------------------------------------------------------------

@dataclass
class Built:
    family: str
    archs: tuple[str, ...]
    path: Path | None = None          # the .so, when built
    seconds: float = 0.0              # build time (0 when it came from the cache)
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _aot_library(fam: Family, archs) -> Path | None:
    """A library that setup.py built ahead of time (TORCH_CUDA_ARCH_LIST) for all of these archs."""
    import json
    aot = _paths.PACKAGE_DIR / "_aot"
    meta = aot / f"k2k_{fam.name}.json"
    libs = sorted(aot.glob(f"k2k_{fam.name}*.so"))
    if not libs or not meta.is_file():
        return None
    if not set(archs) <= set(json.loads(meta.read_text()).get("archs", [])):
        return None
    return libs[0]


def build_family(fam: Family, archs, *, verbose: bool | None = None) -> Built:
    """Build (or find in the cache) and load one family's library. Never raises for a build error:
    the error is returned so the caller can fall back to the references."""
    from filelock import FileLock
    from torch.utils import cpp_extension

    _promote_libstdcxx()

    archs = family_archs(fam, archs)
    if not archs:
        return Built(fam.name, archs, error=f"family {fam.name} has no kernels for these archs")
    srcs = family_sources(fam)
    if not srcs:
        return Built(fam.name, archs, error=f"family {fam.name} has no sources yet")
    aot = _aot_library(fam, archs)
    if aot is not None:
        import torch
        torch.ops.load_library(str(aot))
        return Built(fam.name, archs, path=aot, extra={"aot": True})
    if verbose is None:
        verbose = os.environ.get("K2K_VERBOSE", "0") not in ("", "0")
    includes = [str(_paths.csrc_dir())]
    if fam.needs_cutlass:
        inc = _paths.cutlass_include_dir()
        if inc is None:
            return Built(fam.name, archs, error="CUTLASS headers not found: pip install nvidia-cutlass, "
                                                "or put a CUTLASS checkout in third_party/cutlass")
        includes += [str(inc), str(inc.parent / "tools" / "util" / "include")]
    family_define = f"-DK2K_FAMILY={fam.name}"       # names the exported SMEM-budget table
    cflags = list(COMMON_CXX_FLAGS) + [family_define]
    cuda_cflags = list(COMMON_NVCC_FLAGS) + [family_define] + gencode_flags(archs)
    key = build_key(fam, archs, cflags, cuda_cflags)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{fam.name}-{key}"
    name = f"k2k_{fam.name}_{key[:8]}"
    so = final / f"{name}.so"
    with FileLock(str(root / f"{fam.name}-{key}.lock")):
        for attempt in range(2):
            if so.is_file():
                try:
                    import torch
                    torch.ops.load_library(str(so))
                    return Built(fam.name, archs, path=so)
                except OSError as e:      # corrupt or foreign artifact: a cache miss, not a crash
                    log(f"cached {so} failed to load ({e}); rebuilding")
                    shutil.rmtree(final, ignore_errors=True)
            if attempt:
                break
            tmp = root / f"{fam.name}-{key}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            log(f"building CUDA kernels '{fam.name}' for {','.join(archs)} ({len(srcs)} files). "
                f"First use only; this takes a few minutes. Cache: {final}")
            t0 = time.time()
            try:
                cpp_extension.load(name=name, sources=[str(s) for s in srcs], extra_cflags=cflags,
                                   extra_cuda_cflags=cuda_cflags, extra_include_paths=includes,
                                   build_directory=str(tmp), verbose=verbose, is_python_module=False)
            except Exception as e:  # noqa: BLE001 - a build error is reported, then we fall back
                log_path = tmp / "build.log"
                log_path.write_text(str(e))
                return Built(fam.name, archs, error=f"build of '{fam.name}' failed: {str(e)[-4000:]}")
            dt = time.time() - t0
            log(f"built '{fam.name}' in {dt:.0f} s")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            return Built(fam.name, archs, path=so, seconds=dt)
    return Built(fam.name, archs, error=f"could not load {so}")


def build_all(archs=None, families=None, verbose=None) -> list[Built]:
    archs = tuple(archs) if archs else target_archs()
    wanted = set(families) if families else None
    out = []
    for fam in FAMILIES:
        if wanted is not None and fam.name not in wanted:
            continue
        out.append(build_family(fam, archs, verbose=verbose))
    return out
