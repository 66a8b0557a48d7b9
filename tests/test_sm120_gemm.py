"""moe_gemm_w4a4_sm120: the SM120 native W4A4 grouped GEMM (CUTLASS block-scaled, csrc/cutlass_sm120).

What runs where:
- CPU (here and in CI): the reference equals moe_gemm(act="nvfp4", scale_layout="swizzled"); a
  Python emulation of what the CUTLASS kernel computes FROM THE EXACT BUFFERS the launcher hands it
  (per-expert 128-row-aligned swizzled activation scale blocks, swizzled weight scales, alpha folded
  to a_scale_e * w_alpha_e) matches the reference; fake, opcheck, torch.compile, errors.
- slow (nvcc, no GPU): the family compiles for sm_120a and every config's SharedStorage fits
  101 376 B; CUTLASS 4.2 cannot build the N=64/N=32 tiles (documents why they are missing).
- sm120 (an SM120 GPU; none exists here, so these SKIP): kernel vs reference, graph replay.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from k2kernels import _build, _paths, nvfp4, reference
from k2kernels.reference.sm120 import CONFIGS

from tolerances import GEMM_ATOL_REL, GEMM_REL_FRO, BF16_RTOL

OP = torch.ops.k2kernels.moe_gemm_w4a4_sm120
ROOT = Path(__file__).resolve().parent.parent
HAS_SM120 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 12

# (rows per expert, N, K): Kimi-K2 down (K=2048) and gate_up (K=7168) slices; empty experts.
SHAPES = [((3, 0, 5), 64, 128), ((130, 1, 0, 7), 136, 256), ((8,) + (0,) * 6 + (2,), 256, 2048)]


def _args(rows, N, K, device="cpu", per_expert=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    E, M = len(rows), sum(rows)
    a = (torch.randn(M, K, generator=g) * 2).to(torch.bfloat16)
    w_packed, w_lin, w_alpha = nvfp4.quantize_weight(torch.randn(E, N, K, generator=g))
    w_scale = nvfp4.swizzle_scales(w_lin)
    offsets = torch.tensor([0] + torch.tensor(rows).cumsum(0).tolist(), dtype=torch.int32)
    amax = a.float().abs().max().item() / (6 * 448)
    a_scale = (torch.rand(E, generator=g) + 0.5) * amax if per_expert else torch.tensor(amax)
    return tuple(t.to(device) for t in (a, w_packed, w_scale, w_alpha.float(), offsets, a_scale))


def _close(out, ref):
    o, r = out.double().cpu(), ref.double().cpu()
    rel = (o - r).norm() / r.norm().clamp_min(1e-30)
    assert rel <= GEMM_REL_FRO, rel
    bound = GEMM_ATOL_REL * r.abs().max() + BF16_RTOL * r.abs()
    assert ((o - r).abs() <= bound).all(), (o - r).abs().max()


def emulate_kernel(a, w, w_scale, w_alpha, offsets, a_scale):
    """What the SM120 kernel computes from the buffers the launcher builds: A = the quantize_nvfp4_experts
    codes with SFA read from expert e's own 128-row-aligned swizzled block, B = w[e] with its swizzled
    SFB, acc = sum(e2m1*sfa * e2m1*sfb) (fp64 here), D = bf16(alpha_e * acc), alpha_e = a_scale_e * w_alpha_e."""
    E, N, _ = w.shape
    M, K = a.shape
    kb = K // 16
    q, sf, so = reference.quantize_nvfp4_experts(a, a_scale, offsets)
    w_lin = nvfp4.unswizzle_scales(w_scale, N, kb)
    out = torch.zeros(M, N, dtype=torch.float64)
    offs = offsets.tolist()
    s = a_scale.reshape(-1)
    for e in range(E):
        r0, r1 = offs[e], offs[e + 1]
        if r0 == r1:
            continue
        block = sf[so[e]:so[e] + (r1 - r0 + 127) // 128 * 128]     # a self-contained swizzled matrix
        sfa = nvfp4.unswizzle_scales(block, r1 - r0, kb)
        A = nvfp4.dequantize(q[r0:r1], sfa, torch.tensor(1.0)).double()
        B = nvfp4.dequantize(w[e], w_lin[e], torch.tensor(1.0)).double()
        alpha = (s[e if s.numel() > 1 else 0] * w_alpha[e]).float()    # fp32, as the setup kernel
        out[r0:r1] = alpha.double() * (A @ B.t())
    return out.to(torch.bfloat16)


# ---- CPU -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("per_expert", [True, False])
@pytest.mark.parametrize("rows,N,K", SHAPES)
def test_reference_is_moe_gemm_nvfp4(rows, N, K, per_expert):
    args = _args(rows, N, K, per_expert=per_expert)
    a, w, ws, wa, off, s = args
    out = OP(*args)
    want = reference.moe_gemm(a, w, ws, wa, off, act="nvfp4", a_scale=s, scale_layout="swizzled")
    assert torch.equal(out, want)


@pytest.mark.parametrize("rows,N,K", SHAPES)
def test_kernel_data_contract_emulation_matches_reference(rows, N, K):
    """The per-expert scale blocks + alpha folding the launcher feeds CUTLASS give the reference result."""
    args = _args(rows, N, K)
    ref = reference.moe_gemm_w4a4_sm120(*args)
    emu = emulate_kernel(*args)
    _close(emu, ref)
    assert emu.abs().max() > 0


def test_emulation_detects_a_shifted_scale_block():
    """The emulation check can fail: reading expert 1's scales from the wrong 128-row block differs."""
    args = _args((5, 7), 64, 128)
    a, w, ws, wa, off, s = args
    q, sf, so = reference.quantize_nvfp4_experts(a, s, off)
    assert so.tolist() == [0, 128, 256]
    wrong = nvfp4.unswizzle_scales(sf[0:128], 7, 8)      # expert 0's block used for expert 1
    right = nvfp4.unswizzle_scales(sf[128:256], 7, 8)
    assert not torch.equal(wrong.view(torch.uint8), right.view(torch.uint8))


def test_rows_outside_experts_are_zero():
    a, w, ws, wa, off, s = _args((3, 4), 64, 128)
    off = torch.tensor([0, 3, 5], dtype=torch.int32)          # rows 5, 6 belong to no expert
    out = OP(a, w, ws, wa, off, s)
    assert (out[5:] == 0).all() and (out[:5] != 0).any()


@pytest.mark.parametrize("bad,match", [
    (lambda a: (a[0][:, :64].contiguous(),) + a[1:], "K % 128"),
    (lambda a: (a[0], a[1][:, :60].contiguous(), a[2], a[3], a[4], a[5]), "N % 8"),
    (lambda a: (a[0], a[1], nvfp4.unswizzle_scales(a[2], 64, 8), a[3], a[4], a[5]), "w_scale must be float8_e4m3fn"),
    (lambda a: (a[0], a[1], a[2], a[3], a[4], torch.ones(2)), "a_scale must be float32"),
    (lambda a: (a[0], a[1], a[2], a[3][:2].contiguous(), a[4], a[5]), "w_alpha must be float32"),
    (lambda a: (a[0].float(),) + a[1:], "a must be bfloat16"),
])
def test_bad_input_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        OP(*bad(_args((3, 0, 5), 64, 128)))


def test_bad_config_value_error():
    with pytest.raises(ValueError, match="config must be one of"):
        OP(*_args((3, 0, 5), 64, 128), "t128x64")


def test_configs_match_the_cuda_sources():
    """CONFIGS (Python) lists exactly the configs csrc/cutlass_sm120/w4a4_types.h builds."""
    text = (_paths.csrc_dir() / "cutlass_sm120" / "w4a4_types.h").read_text()
    line = next(l for l in text.splitlines() if l.startswith("#define K2K_W4A4_FOR_EACH_CONFIG"))
    built = [tok.strip("X() ") for tok in line.split(")")[1:] if tok.strip()]
    assert ["auto"] + [b for b in built if b] == list(CONFIGS)
    for name in CONFIGS[1:]:
        assert (_paths.csrc_dir() / "cutlass_sm120" / f"w4a4_{name}.cu").is_file()


def test_fake_and_opcheck_cpu():
    args = _args((3, 0, 5), 64, 128)
    meta = OP(*[t.to("meta") for t in args])
    assert meta.shape == (8, 64) and meta.dtype == torch.bfloat16
    # float8 inputs: opcheck's schema test cannot compare float8 (see tests/test_ops.py)
    torch.library.opcheck(OP.default, args, test_utils=("test_autograd_registration", "test_faketensor",
                                                         "test_aot_dispatch_dynamic"))


def test_compile_fullgraph_cpu():
    args = _args((3, 0, 5), 64, 128)
    eager = OP(*args)
    comp = torch.compile(lambda *x: OP(*x), fullgraph=True, backend="aot_eager")(*args)
    assert torch.equal(eager, comp)


# ---- compile-only proofs (nvcc, no GPU) -----------------------------------------------------------

def _nvcc():
    p = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return str(p) if p.exists() else shutil.which("nvcc")


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found: set CUDA_HOME to a CUDA 12.8+ toolkit")
def test_family_compiles_for_sm120a_and_fits_smem():
    from k2kernels._resources import declared_budgets
    fam = next(f for f in _build.FAMILIES if f.name == "cutlass_sm120")
    os.environ.setdefault("K2K_CACHE_DIR", str(ROOT / ".jit_cache"))
    built = _build.build_family(fam, ("sm_120a",))
    assert built.error is None, built.error
    budgets = dict(declared_budgets(built.path, "cutlass_sm120"))
    for name in CONFIGS[1:]:
        assert 0 < budgets[f"w4a4_sm120_{name}"] <= _build.SM120_SMEM_LIMIT, budgets


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found")
@pytest.mark.parametrize("tile_n", [64, 32])
def test_cutlass_42_cannot_build_small_n_tiles(tile_n, tmp_path):
    """Why 128x64 and 128x32 are missing: CUTLASS 4.2's SM120 block-scaled builder sizes the SFB
    shared-memory atom as TileN/128 (0 for N < 128), so its TMA static_assert fails. Upstream added
    small-N tiles in NVIDIA/cutlass#3176 (after 4.2). When this test fails, the wheel has the fix:
    add the configs (w4a4_types.h, one TU each)."""
    inc = _paths.cutlass_include_dir()
    src = tmp_path / "probe.cu"
    src.write_text('#include "cutlass_sm120/w4a4_gemm.cuh"\n'
                   f'int main() {{ return (int)k2k::sm120::W4A4Gemm<128, {tile_n}, 128, 4, false>::kSmemBytes; }}\n')
    cmd = [_nvcc(), "-std=c++17", "--expt-relaxed-constexpr", "-gencode=arch=compute_120a,code=sm_120a", "-c",
           f"-I{_paths.csrc_dir()}", f"-I{inc}", f"-I{inc.parent / 'tools' / 'util' / 'include'}", str(src),
           "-o", str(tmp_path / "probe.o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode != 0
    assert "TMA requires CTA_Tile and SLayout top-level size equivalence" in res.stdout + res.stderr


# ---- SM120 GPU (skips on every GPU we have) --------------------------------------------------------

sm120 = pytest.mark.skipif(not HAS_SM120, reason="needs an SM120/SM121 GPU (RTX PRO 6000 / RTX 5090); none here")


@pytest.mark.gpu
@pytest.mark.sm120
@sm120
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("rows,N,K", SHAPES)
def test_sm120_kernel_vs_reference(rows, N, K, config):
    args = _args(rows, N, K, device="cuda")
    ref = reference.moe_gemm_w4a4_sm120(*[t.cpu() for t in args])
    junk = torch.empty(64 << 20, dtype=torch.uint8, device="cuda").fill_(0xFF)   # poison the allocator
    del junk
    out = OP(*args, config)
    _close(out, ref)


@pytest.mark.gpu
@pytest.mark.sm120
@sm120
def test_sm120_graph_replay_equals_eager():
    args = _args(((40, 0, 300, 1)), 256, 2048, device="cuda")
    eager = OP(*args)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = OP(*args)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(eager, out)


@pytest.mark.gpu
@pytest.mark.skipif(HAS_SM120 or not torch.cuda.is_available(), reason="checks the non-SM120 behaviour")
def test_non_sm120_gpu_uses_reference_or_says_why():
    """On the H200 the family is not built (sm_120a only): the op runs the reference (or, with
    K2K_REQUIRE_KERNELS=1, raises NotImplementedError naming the missing kernel)."""
    args = _args((3, 0, 5), 64, 128, device="cuda")
    if os.environ.get("K2K_REQUIRE_KERNELS", "0") not in ("", "0"):
        with pytest.raises(NotImplementedError, match="moe_gemm_w4a4_sm120"):
            OP(*args)
    else:
        _close(OP(*args), reference.moe_gemm_w4a4_sm120(*[t.cpu() for t in args]))
