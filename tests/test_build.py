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
    # Hopper is always built as sm_90a (the moe_gemm wgmma kernel needs it; its plain sm_90 build is an error)
    assert _build.parse_archs("sm_90") == ("sm_90a",) and _build.parse_archs("9.0,sm_90a") == ("sm_90a",)
    assert _build.gencode_flags(["sm_120a"]) == ["-gencode=arch=compute_120a,code=sm_120a"]
    with pytest.raises(ValueError):
        _build.parse_archs("hopper")


@pytest.mark.skipif(not _have_nvcc(), reason="nvcc not found: set CUDA_HOME to a CUDA 12.8+ toolkit")
def test_plain_sm90_build_of_the_wgmma_kernel_is_an_error(tmp_path):
    """A plain sm_90 build would give Hopper an empty wgmma kernel (wrong answers); it must not compile."""
    import torch.utils.cpp_extension as ext
    from k2kernels import _paths
    inc = _paths.cutlass_include_dir()
    if inc is None:
        pytest.skip("CUTLASS headers not found")
    nvcc = str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        nvcc = shutil.which("nvcc")
    cmd = [nvcc, "-std=c++17", "--expt-relaxed-constexpr", "-gencode=arch=compute_90,code=sm_90",
           "-I", str(_paths.csrc_dir()), "-I", str(inc)] + [f"-I{p}" for p in ext.include_paths()] + \
          ["-c", str(_paths.csrc_dir() / "moe_gemm" / "moe_gemm_wgmma_n64.cu"), "-o", str(tmp_path / "x.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "build Hopper as sm_90a" in proc.stdout + proc.stderr, proc.stderr[-2000:]


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


def _cmake_args(build_dir: Path) -> list[str]:
    """The README's CMake configure line for a GPU-less box (TORCH_CUDA_ARCH_LIST skips Torch's GPU
    detection; nvrtc from the CUDA wheel torch depends on when the toolkit has none)."""
    import torch
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    args = ["cmake", "-S", str(ROOT), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            "-DK2K_CUDA_ARCHS=90a;120a", "-DTORCH_CUDA_ARCH_LIST=9.0a;12.0a", f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCUDAToolkit_ROOT={cuda_home}", f"-DCUDA_TOOLKIT_ROOT_DIR={cuda_home}",
            f"-DCMAKE_CUDA_COMPILER={cuda_home}/bin/nvcc"]
    if not any((Path(cuda_home) / d / "libnvrtc.so").exists() for d in ("lib64", "lib")):
        try:
            import nvidia.cu13
            args.append(f"-DCUDA_nvrtc_LIBRARY={Path(nvidia.cu13.__path__[0]) / 'lib' / 'libnvrtc.so.13'}")
        except ImportError:
            pass
    return args


@pytest.mark.slow
@pytest.mark.skipif(not (_have_nvcc() and shutil.which("cmake")), reason="needs nvcc and cmake")
def test_cmake_library_builds_and_registers_every_op(tmp_path):
    """The C++ users' path: CMakeLists.txt builds libk2kernels.so for sm_90a + sm_120a, and the library
    alone (without the Python package) defines every schema with a CUDA kernel."""
    cfg = subprocess.run(_cmake_args(tmp_path), capture_output=True, text=True, timeout=900)
    print(cfg.stdout[-5000:], cfg.stderr[-5000:])
    assert cfg.returncode == 0, "cmake configure failed; see the output above"
    build = subprocess.run(["cmake", "--build", str(tmp_path), "-j", os.environ.get("MAX_JOBS", "2")],
                           capture_output=True, text=True, timeout=3600)
    print(build.stdout[-5000:], build.stderr[-10000:])
    assert build.returncode == 0, "cmake build failed; see the output above"
    from k2kernels import _registry
    check = ("import sys, torch; torch.ops.load_library(sys.argv[1]); "
             "missing = [op for op in sys.argv[2:] if not torch._C._dispatch_has_kernel_for_dispatch_key("
             "'k2kernels::' + op, 'CUDA')]; print('missing', missing); sys.exit(1 if missing else 0)")
    proc = subprocess.run([sys.executable, "-c", check, str(tmp_path / "libk2kernels.so"), *_registry.OPS],
                          capture_output=True, text=True, timeout=300)
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0, "the CMake library lacks CUDA kernels for some ops"


@pytest.mark.slow
@pytest.mark.skipif(not _have_nvcc(), reason="nvcc not found: set CUDA_HOME to a CUDA 12.8+ toolkit")
def test_setup_py_ahead_of_time_build_is_what_the_package_loads(tmp_path):
    """setup.py's ahead-of-time extensions (TORCH_CUDA_ARCH_LIST set; `build_ext --inplace` = what
    `pip install --no-build-isolation -e .` runs) build every family into k2kernels/_aot/, and the package
    then loads those libraries instead of JIT-building (sm_90a here to keep CI short)."""
    import re
    src = tmp_path / "k2kernels_src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv*", ".jit_cache", "build", "_aot",
                                                             "__pycache__", ".whl", ".device"))
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST="9.0a", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=3600)
    print(build.stdout[-5000:], build.stderr[-10000:])
    assert build.returncode == 0, "setup.py build_ext failed; see the output above"
    env = dict(os.environ, K2K_CACHE_DIR=str(tmp_path / "jit_cache"))
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    check = subprocess.run([sys.executable, "-m", "k2kernels.build", "--arch", "sm_90a", "--check"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=1800)
    print(check.stdout[-10000:], check.stderr[-5000:])
    assert check.returncode == 0
    for fam in ("quant", "attention", "routing", "moe_gemm", "fused_moe"):
        assert re.search(rf"{fam}\s+ok \(sm_90a; cached\) \S*/k2kernels/_aot/k2k_{fam}", check.stdout), fam
