"""What runs where: fallback with a warning, forced references, strict mode, corrupt cache entries."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, **env) -> subprocess.CompletedProcess:
    """A fresh interpreter with the k2kernels knobs cleared, then `env` applied: the device runs export
    K2K_REQUIRE_KERNELS=1, which would otherwise turn the fallback this file tests into an error."""
    full = {k: v for k, v in os.environ.items() if k not in ("K2K_REQUIRE_KERNELS", "K2K_FORCE_REFERENCE", "K2K_FAMILIES")}
    full.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=1800)


@pytest.mark.gpu
def test_force_reference_runs_every_op_through_the_reference():
    p = _run("import k2kernels; r = k2kernels.load_kernels(); print(sorted(set(r.values())))", K2K_FORCE_REFERENCE="1")
    assert p.returncode == 0, p.stderr
    assert "['reference (K2K_FORCE_REFERENCE=1)']" in p.stdout


@pytest.mark.gpu
def test_missing_kernel_falls_back_with_one_warning_or_raises_when_required():
    code = ("import warnings, torch, k2kernels\n"
            "x = torch.randn(4, 16, device='cuda')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    for _ in range(3): k2kernels.topk_router(x, 2, scoring='softmax')\n"
            "print('warnings', sum('no CUDA kernel' in str(m.message) for m in w))\n")
    p = _run(code, K2K_FAMILIES="quant")          # routing not loaded -> reference fallback
    assert p.returncode == 0, p.stderr
    assert "warnings 1" in p.stdout
    p = _run(code, K2K_FAMILIES="quant", K2K_REQUIRE_KERNELS="1")
    assert p.returncode != 0 and "no CUDA kernel" in p.stderr and "K2K_REQUIRE_KERNELS=1" in p.stderr


def test_corrupt_cached_library_is_rebuilt(tmp_path, monkeypatch):
    """A cached library that fails to load is deleted and rebuilt, not fatal. The compiler is
    replaced by a stub that 'builds' by copying a real shared library (libm), so this runs anywhere."""
    import ctypes.util
    import shutil

    from torch.utils import cpp_extension

    from k2kernels import _build

    libm = Path("/lib/x86_64-linux-gnu") / (ctypes.util.find_library("m") or "libm.so.6")
    if not libm.exists():
        pytest.skip("no libm to stand in for a built library")
    builds = []

    def fake_load(name, sources, build_directory, **kw):
        builds.append(name)
        out = Path(build_directory) / f"{name}.so"
        if len(builds) == 1:
            out.write_bytes(b"not an ELF file")      # a corrupt artifact left in the cache
        else:
            shutil.copy(libm, out)

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setenv("K2K_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_build, "nvcc_version", lambda: "stub")
    fam = _build.FAMILIES[0]
    first = _build.build_family(fam, ("sm_90a",))
    assert first.error is None and first.path.is_file() and len(builds) == 1
    rebuilt = _build.build_family(fam, ("sm_90a",))               # the cached file fails to load
    assert rebuilt.error is None and len(builds) == 2
    assert rebuilt.path == first.path and rebuilt.path.read_bytes()[:4] == b"\x7fELF"
    cached = _build.build_family(fam, ("sm_90a",))                # now a plain cache hit
    assert cached.path == first.path and len(builds) == 2
