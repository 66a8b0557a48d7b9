"""Our Python 128x4 scale swizzle (k2kernels.nvfp4.swizzle_scales) is CUTLASS's SM1xx block-scaled
scale-factor layout: a tiny host C++ program (tests/cpp/sf_layout_dump.cpp) prints the byte offset
that Sm1xxBlkScaledConfig<16>::tile_atom_to_shape_SFA/SFB assign to every (row, k-block), and we
compare them with where swizzle_scales puts that byte. No GPU needed: a host compiler and the
CUTLASS headers (nvidia-cutlass wheel) are enough."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from k2kernels import _paths, nvfp4

SRC = Path(__file__).parent / "cpp" / "sf_layout_dump.cpp"
# (M, N, K): tile-aligned, ragged M/N (padding rows), K/16 not a multiple of 4 (padding columns),
# one row, and the Kimi-K2 gate_up / down shapes' K.
SHAPES = [(128, 128, 64), (5, 130, 64), (200, 40, 192), (1, 8, 80), (257, 384, 7168), (3, 256, 2048), (129, 7, 48)]


def _cuda_includes():
    roots = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"]
    out = []
    for r in roots:
        for d in (r, r / "cccl"):
            if d.is_dir():
                out.append(d)
    return out


@pytest.fixture(scope="module")
def dump_binary(tmp_path_factory):
    inc = _paths.cutlass_include_dir()
    if inc is None:
        pytest.skip("CUTLASS headers not found (pip install nvidia-cutlass)")
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++/c++/clang++) on PATH")
    cuda_inc = _cuda_includes()
    if not any((d / "cuda" / "std" / "utility").exists() for d in cuda_inc):
        pytest.skip("CUDA headers (cuda/std, from the CUDA toolkit's cccl) not found; set CUDA_HOME")
    exe = tmp_path_factory.mktemp("sfdump") / "sf_layout_dump"
    cmd = [cxx, "-std=c++17", "-O1", "-w", f"-I{inc}", *[f"-I{d}" for d in cuda_inc], str(SRC), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"compiling {SRC.name} failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}"
    return exe


def _swizzled_position(rows: int, kb: int) -> torch.Tensor:
    """[rows, kb] int64: the byte offset swizzle_scales gives element (r, c). swizzle_scales moves
    bytes, so we push the three bytes of (linear index + 1) through it and read where each landed."""
    lin = torch.arange(1, rows * kb + 1, dtype=torch.int64).reshape(rows, kb)
    planes = []
    for shift in (0, 8, 16):
        plane = ((lin >> shift) & 0xFF).to(torch.uint8).view(torch.float8_e4m3fn)
        planes.append(nvfp4.swizzle_scales(plane).view(torch.uint8).reshape(-1).to(torch.int64))
    tag = planes[0] | (planes[1] << 8) | (planes[2] << 16)       # (linear index + 1) at each offset, 0 = padding
    pos = torch.full((rows * kb,), -1, dtype=torch.int64)
    where = torch.nonzero(tag).squeeze(1)
    pos[tag[where] - 1] = where
    assert (pos >= 0).all()
    return pos.reshape(rows, kb)


def test_python_swizzle_equals_cutlass_layout(dump_binary):
    args = [str(v) for shape in SHAPES for v in shape]
    res = subprocess.run([str(dump_binary), *args], capture_output=True, text=True, check=True)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 * len(SHAPES)
    for line in lines:
        which, M, N, K, cosize, *offs = line.split()
        M, N, K, cosize = int(M), int(N), int(K), int(cosize)
        rows, kb = (M if which == "SFA" else N), K // 16
        cutlass = torch.tensor([int(o) for o in offs], dtype=torch.int64).reshape(rows, kb)
        ours = _swizzled_position(rows, kb)
        assert torch.equal(ours, cutlass), f"{which} M={M} N={N} K={K}: first mismatch at " \
            f"{torch.nonzero(ours != cutlass)[0].tolist()}"
        # CUTLASS addresses exactly the padded [pad128(rows), pad4(K/16)] bytes we allocate.
        Rp, KBp = nvfp4.swizzled_scale_shape(rows, kb)
        assert cosize <= Rp * KBp, (which, M, N, K, cosize, Rp * KBp)


def test_dump_detects_a_wrong_swizzle(dump_binary):
    """The comparison can fail: a swizzle with the 32-row and 4-row sub-blocks swapped differs."""
    res = subprocess.run([str(dump_binary), "128", "128", "64"], capture_output=True, text=True, check=True)
    offs = torch.tensor([int(o) for o in res.stdout.splitlines()[0].split()[5:]]).reshape(128, 4)
    r = torch.arange(128)[:, None]
    c = torch.arange(4)[None, :]
    wrong = (r // 32) * 16 + (r % 32) * 4 + c
    assert not torch.equal(wrong, offs)
    right = (r % 32) * 16 + (r // 32) * 4 + c
    assert torch.equal(right, offs)
