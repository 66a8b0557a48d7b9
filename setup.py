"""Install k2kernels. Plain `pip install -e .` installs Python only; the CUDA kernels are then built
by the JIT on first use (k2kernels/_build.py). To build them ahead of time instead, set the archs:

    TORCH_CUDA_ARCH_LIST="9.0a;12.0a" pip install --no-build-isolation -e .

which compiles the same per-family sources (csrc/<family>/ + csrc/common/) into k2kernels/_aot/.
"""
import os
import shutil
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
ext_modules, cmdclass = [], {}

if os.environ.get("TORCH_CUDA_ARCH_LIST"):
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT))
    # _build first: it points CUDA_HOME at a real toolkit before torch.utils.cpp_extension reads it.
    from k2kernels import _build, _paths  # noqa: E402

    from torch.utils.cpp_extension import BuildExtension, CUDAExtension  # noqa: E402

    archs = _build.parse_archs(os.environ["TORCH_CUDA_ARCH_LIST"].replace(" ", ";"))
    for fam in _build.FAMILIES:
        fam_archs = _build.family_archs(fam, archs)
        srcs = _build.family_sources(fam)
        if not fam_archs or not srcs:
            continue
        includes = [str(ROOT / "csrc")]
        if fam.needs_cutlass:
            inc = _paths.cutlass_include_dir()
            if inc is None:
                raise SystemExit("k2kernels setup: CUTLASS headers not found (pip install nvidia-cutlass)")
            includes += [str(inc), str(inc.parent / "tools" / "util" / "include")]
        define = f"-DK2K_FAMILY={fam.name}"
        ext_modules.append(CUDAExtension(
            name=f"k2kernels._aot.k2k_{fam.name}",
            sources=[str(s.relative_to(ROOT)) for s in srcs],
            include_dirs=includes,
            extra_compile_args={"cxx": list(_build.COMMON_CXX_FLAGS) + [define],
                                "nvcc": list(_build.COMMON_NVCC_FLAGS) + [define] + _build.gencode_flags(fam_archs)}))
        aot = ROOT / "k2kernels" / "_aot"
        aot.mkdir(exist_ok=True)
        (aot / f"k2k_{fam.name}.json").write_text('{"archs": %s}\n' % list(fam_archs).__repr__().replace("'", '"'))
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
