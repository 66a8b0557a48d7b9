"""The compile-only check CI relies on: every kernel family builds for sm_90a and sm_120a with
nvcc (no GPU needed) and every sm_120a kernel fits SM120's 101 376 B of shared memory.
This is the README's `python -m k2kernels.build --arch sm_90a,sm_120a --check`, run as a test."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k2kernels import _build

ROOT = Path(__file__).resolve().parent.parent


def _have_nvcc() -> bool:
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return (Path(home) / "bin" / "nvcc").exists() or shutil.which("nvcc") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _have_nvcc(), reason="nvcc not found: set CUDA_HOME to a CUDA 12.8+ toolkit")
def test_all_families_compile_for_sm90a_and_sm120a_within_smem_budget():
    env = dict(os.environ, K2K_CACHE_DIR=os.environ.get("K2K_CACHE_DIR", str(ROOT / ".jit_cache")),
               MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    proc = subprocess.run([sys.executable, "-m", "k2kernels.build", "--arch", "sm_90a,sm_120a", "--check"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    print(proc.stdout[-20000:])
    print(proc.stderr[-20000:])
    assert proc.returncode == 0, "compile check failed; see the output above"
    assert "quantize_nvfp4_kernel" in proc.stdout          # the table lists real kernels, for both archs
    assert "sm_120a" in proc.stdout and "sm_90a" in proc.stdout


def test_arch_mapping():
    assert _build.arch_for_capability(9, 0) == "sm_90a"
    assert _build.arch_for_capability(12, 0) == "sm_120a"
    assert _build.arch_for_capability(12, 1) == "sm_121a"
    assert _build.arch_for_capability(8, 9) == "sm_89"
    assert _build.parse_archs("9.0a;12.0a") == ("sm_90a", "sm_120a")
    assert _build.gencode_flags(["sm_120a"]) == ["-gencode=arch=compute_120a,code=sm_120a"]
    with pytest.raises(ValueError):
        _build.parse_archs("hopper")


def test_cache_key_covers_sources_archs_and_flags(tmp_path, monkeypatch):
    fam = _build.Family("quant")
    k1 = _build.build_key(fam, ("sm_90a",), ["-O3"], ["-O3"])
    assert k1 == _build.build_key(fam, ("sm_90a",), ["-O3"], ["-O3"])
    assert k1 != _build.build_key(fam, ("sm_120a",), ["-O3"], ["-O3"])
    assert k1 != _build.build_key(fam, ("sm_90a",), ["-O2"], ["-O3"])
    # a header change changes the key: hash a copy of csrc with one header edited
    src = _build._paths.csrc_dir()
    copy = tmp_path / "csrc"
    shutil.copytree(src, copy)
    monkeypatch.setattr(_build._paths, "csrc_dir", lambda: copy)
    assert _build.build_key(fam, ("sm_90a",), ["-O3"], ["-O3"]) == k1
    (copy / "common" / "nvfp4.cuh").write_text((copy / "common" / "nvfp4.cuh").read_text() + "\n// edit\n")
    assert _build.build_key(fam, ("sm_90a",), ["-O3"], ["-O3"]) != k1
