"""fp8_kv_attention: CUDA kernel vs the reference on the SAME FP8 cache (+ reference sanity on CPU).

Caches are built the way an engine builds them (random BF16 K/V -> quantize_kv with a scale), pages
are handed out in shuffled order, queries are random and scaled so the softmax is peaky (a near-uniform
softmax over thousands of keys would make the output ~0 and hide errors). Outputs are poisoned: the
op allocates its output and workspace, so a NaN-filled block of the same size is freed into the
caching allocator right before each call."""
from __future__ import annotations

import math
import os

import pytest
import torch

import k2kernels  # defines torch.ops.k2kernels; k2kernels.fp8_kv_attention is the Python wrapper
from k2kernels import reference
from k2kernels.reference.kv_cache import quantize_kv
from tolerances import ATTN_ATOL, ATTN_ATOL_REL, ATTN_LSE_ATOL, ATTN_REL_FRO, ATTN_RTOL, REF_LSE_TOL

gpu = pytest.mark.gpu
OPS = torch.ops.k2kernels

# (name, Hq, Hkv, D, DV, latent, page_size): head dims 64/128/256, latent 576/512, GQA groups 1..128.
SHAPES = [
    ("gqa8_d128_p16", 64, 8, 128, 128, False, 16),
    ("gqa8_d128_p64", 64, 8, 128, 128, False, 64),
    ("mha_d64_p16", 8, 8, 64, 64, False, 16),
    ("gqa4_d64_p64", 16, 4, 64, 64, False, 64),
    ("gqa16_d128_p16", 32, 2, 128, 128, False, 16),
    ("mqa128_d128_p64", 128, 1, 128, 128, False, 64),
    ("gqa4_d256_p16", 16, 4, 256, 256, False, 16),
    ("latent64_d576_p64", 64, 1, 576, 512, True, 64),
    ("latent16_d576_p16", 16, 1, 576, 512, True, 16),
]


def make_case(q_lens, seq_lens, Hq, Hkv, D, DV, latent, page_size, per_head=False, device="cuda", seed=0,
              extra_pages=3):
    """Random paged FP8 cache + queries. Returns the op's argument tuple (without softmax_scale...)."""
    gen = torch.Generator().manual_seed(seed)
    B = len(q_lens)
    n_pages_per = [(L + page_size - 1) // page_size for L in seq_lens]
    max_pages = max(n_pages_per + [1]) + 1                  # one spare column: never read
    total_pages = sum(n_pages_per) + extra_pages
    perm = torch.randperm(total_pages, generator=gen)       # shuffled page order
    block_table = torch.full((B, max_pages), -7, dtype=torch.int32)   # junk beyond each sequence
    used = 0
    for b, n in enumerate(n_pages_per):
        block_table[b, :n] = perm[used:used + n].to(torch.int32)
        used += n
    # K/V values with per-head magnitude differences, quantized with a scale (per tensor or per head)
    kf = torch.randn(total_pages * page_size, Hkv, D, generator=gen) * torch.linspace(0.5, 2.0, Hkv).reshape(1, Hkv, 1)
    if per_head:
        k_scale = kf.abs().amax(dim=(0, 2)) / 448.0
    else:
        k_scale = (kf.abs().amax() / 448.0).reshape(())
    k_cache = quantize_kv(kf.to(torch.bfloat16), k_scale).reshape(total_pages, page_size, Hkv, D)
    if latent:
        v_cache, v_scale = None, None
    else:
        vf = torch.randn(total_pages * page_size, Hkv, DV, generator=gen)
        v_scale = vf.abs().amax(dim=(0, 2)) / 448.0 if per_head else (vf.abs().amax() / 448.0).reshape(())
        v_cache = quantize_kv(vf.to(torch.bfloat16), v_scale).reshape(total_pages, page_size, Hkv, DV)
    Tq = sum(q_lens)
    # |logit| ~ 4 * N(0,1): peaky softmax whose output is far from the mean of V
    q = (torch.randn(Tq, Hq, D, generator=gen) * 4.0).to(torch.bfloat16)
    cu = torch.zeros(B + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(q_lens, dtype=torch.int32).cumsum(0)
    to = (lambda t: None if t is None else t.to(device))
    return dict(q=to(q), k_cache=to(k_cache), v_cache=to(v_cache), block_table=to(block_table),
                seq_lens=to(torch.tensor(seq_lens, dtype=torch.int32)), cu_seqlens_q=to(cu),
                k_scale=to(k_scale.float()), v_scale=to(None if v_scale is None else v_scale.float()),
                softmax_scale=D ** -0.5 / 4.0, head_dim_v=DV if latent else -1)


# opcheck's test_schema compares inputs before/after with ops that have no Float8 CPU kernel
# ("mul_cpu_reduced_float" not implemented for Float8_e4m3fn); the other checks run, and
# check_inputs_unchanged covers what test_schema would (the op mutates nothing).
OPCHECK_UTILS = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def check_inputs_unchanged(args, fn):
    before = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)}
    fn()
    for k, v in before.items():
        assert torch.equal(args[k].view(torch.uint8) if v.dtype == torch.float8_e4m3fn else args[k],
                           v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn else v), f"{k} was modified"


def call(args, causal=True, max_q_len=-1, op=None, window_left=-1):
    op = op or OPS.fp8_kv_attention
    return op(args["q"], args["k_cache"], args["v_cache"], args["block_table"], args["seq_lens"],
              args["cu_seqlens_q"], args["k_scale"], args["v_scale"], args["softmax_scale"], causal, max_q_len,
              args["head_dim_v"], window_left)


def poison_allocator(numel_bytes: int):
    """Free a NaN-filled block into the caching allocator so the op's torch.empty output and
    workspace (same size class) start as NaN, not as zeros from an earlier test."""
    if torch.cuda.is_available():
        x = torch.full((numel_bytes // 4 + 1024,), float("nan"), device="cuda")
        del x


def check_close(out, ref):
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), "non-finite output (unwritten rows?)"
    rel = (out - ref).norm() / ref.norm().clamp_min(1e-30)
    assert rel <= ATTN_REL_FRO, f"relative Frobenius error {rel:.3e} > {ATTN_REL_FRO}"
    bound = ATTN_ATOL_REL * ref.abs().max() + ATTN_RTOL * ref.abs()
    bad = (out - ref).abs() > bound
    assert not bad.any(), f"{int(bad.sum())} elements outside the bound; max err {(out - ref).abs().max():.3e}"


def run_and_check(args, causal=True, max_q_len=-1):
    Tq, Hq = args["q"].shape[:2]
    DV = args["v_cache"].shape[3] if args["v_cache"] is not None else args["head_dim_v"]
    poison_allocator(Tq * Hq * DV * 2 * 64)
    out = call(args, causal, max_q_len)
    torch.cuda.synchronize()
    ref = reference.fp8_kv_attention(args["q"], args["k_cache"], args["v_cache"], args["block_table"],
                                     args["seq_lens"], args["cu_seqlens_q"], args["k_scale"], args["v_scale"],
                                     args["softmax_scale"], causal, max_q_len, args["head_dim_v"])
    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    check_close(out, ref)
    return out


# ---------------------------------------------------------------- GPU: decode
# Kernel layouts (docs/attention.md), each forced by its knob: "rows16" (the 16-row layout, every other
# layout off), "rows8" (keys on the MMA's M side), "prefill" (FA2 layout: 128-row CTAs for q_len > 1,
# 64-, 32- or 16-row for decode by group size; D = D_v in
# {64, 128}), "latent" (8-warp MLA layout, D 576 / DV 512 only); "auto" = the launcher's choice by shape.
# "prefill_mma": the prefill layout on its mma.sync kernel also where q_len > 1 on sm_90 would take the
# wgmma kernel (K2K_ATTN_PREFILL_WGMMA=0; elsewhere "prefill" is that kernel already).
LAYOUTS = {"auto": {}, "rows16": {"K2K_ATTN_ROWS8": "0", "K2K_ATTN_PREFILL": "0", "K2K_ATTN_LATENT": "0"},
           "rows8": {"K2K_ATTN_ROWS8": "1"}, "prefill": {"K2K_ATTN_PREFILL": "1"}, "latent": {"K2K_ATTN_LATENT": "1"},
           "prefill_mma": {"K2K_ATTN_PREFILL": "1", "K2K_ATTN_PREFILL_WGMMA": "0"}}
LATENT_SHAPES = [s for s in SHAPES if s[5]]


def set_layout(monkeypatch, layout):
    for k, v in LAYOUTS[layout].items():
        monkeypatch.setenv(k, v)


@gpu
@pytest.mark.parametrize("name,Hq,Hkv,D,DV,latent,page", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("per_head", [False, True], ids=["scale_tensor", "scale_head"])
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill"])
def test_decode_ragged(monkeypatch, name, Hq, Hkv, D, DV, latent, page, per_head, layout):
    set_layout(monkeypatch, layout)
    seq_lens = [1, 17, page * 3 + 5, 300, 1000]            # seq_len 1, lengths off the page grid
    args = make_case([1] * len(seq_lens), seq_lens, Hq, Hkv, D, DV, latent, page, per_head=per_head)
    run_and_check(args)


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill"])
def test_decode_small(monkeypatch, layout):
    """Small case for compute-sanitizer (-k small)."""
    set_layout(monkeypatch, layout)
    args = make_case([1, 1], [5, 40], 16, 2, 128, 128, False, 16)
    run_and_check(args)


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "latent"])
def test_decode_small_latent(monkeypatch, layout):
    set_layout(monkeypatch, layout)
    args = make_case([1, 1], [3, 70], 16, 1, 576, 512, True, 16)
    run_and_check(args)


@gpu
@pytest.mark.parametrize("name,Hq,Hkv,D,DV,latent,page", LATENT_SHAPES, ids=[s[0] for s in LATENT_SHAPES])
@pytest.mark.parametrize("splits", ["auto", "1", "5"])
def test_decode_latent_layout(monkeypatch, name, Hq, Hkv, D, DV, latent, page, splits):
    """The opt-in 8-warp MLA layout: ragged lengths, 128 heads (two 64-row tiles), forced splits."""
    set_layout(monkeypatch, "latent")
    if splits != "auto":
        monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    seq_lens = [1, 17, page * 3 + 5, 300, 1000]
    run_and_check(make_case([1] * len(seq_lens), seq_lens, Hq, Hkv, D, DV, latent, page, per_head=True))
    run_and_check(make_case([1, 1], [129, 700], 128, 1, D, DV, latent, page))


@gpu
@pytest.mark.parametrize("splits", ["1", "3", "37"])
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill"])
def test_decode_forced_splits(monkeypatch, splits, layout):
    """Both paths: direct write (1 split) and split + merge, including more splits than chunks."""
    set_layout(monkeypatch, layout)
    monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    args = make_case([1] * 4, [1, 100, 777, 2048], 64, 8, 128, 128, False, 16, per_head=True)
    run_and_check(args)


@gpu
def test_decode_page8():
    """A page size that is not a multiple of 16 (per-key page lookup path)."""
    args = make_case([1] * 3, [7, 61, 500], 32, 4, 128, 128, False, 8)
    run_and_check(args)


@gpu
def test_decode_long_context_32k():
    args = make_case([1, 1], [32768, 20000], 64, 8, 128, 128, False, 64, per_head=True)
    run_and_check(args)


# ---------------------------------------------------------------- GPU: prefill / chunked prefill
PREFILL = [
    ("gqa8_d128", 64, 8, 128, 128, False, 16),
    ("gqa4_d64", 16, 4, 64, 64, False, 64),
    ("mha_d128", 4, 4, 128, 128, False, 16),
    ("gqa2_d256", 8, 4, 256, 256, False, 16),
    ("latent16_d576", 16, 1, 576, 512, True, 64),
]


@gpu
@pytest.mark.parametrize("name,Hq,Hkv,D,DV,latent,page", PREFILL, ids=[s[0] for s in PREFILL])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill", "prefill_mma", "latent"])
def test_prefill_chunked(monkeypatch, name, Hq, Hkv, D, DV, latent, page, causal, layout):
    set_layout(monkeypatch, layout)
    q_lens = [1, 37, 130, 5]
    seq_lens = [1, 37, 300, 69]                            # fresh prefill, chunked prefill with a prefix
    args = make_case(q_lens, seq_lens, Hq, Hkv, D, DV, latent, page)
    run_and_check(args, causal=causal, max_q_len=max(q_lens))


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill"])
def test_prefill_hint_too_small_and_unknown(monkeypatch, layout):
    """The grid is sized from max_q_len (or Tq == B -> 1); rows beyond it must still be computed."""
    set_layout(monkeypatch, layout)
    q_lens, seq_lens = [0, 3, 1], [4, 10, 6]               # Tq == B == 3 but q_len 3 exists
    args = make_case(q_lens, seq_lens, 16, 2, 128, 128, False, 16)
    run_and_check(args, max_q_len=-1)
    run_and_check(args, max_q_len=1)


@gpu
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("splits", ["1", "3", "7"])
@pytest.mark.parametrize("case", ["decode_group64", "decode_group32", "chunked", "chunked_mma"])
def test_prefill_layout_splits(monkeypatch, splits, case, causal):
    """The prefill layout with key-range splits (partial O / LSE + merge): decode with large GQA groups
    (its default there) and chunked prefill (on sm_90 the wgmma kernel; chunked_mma: the mma.sync one),
    more splits than some rows' chunks."""
    set_layout(monkeypatch, "prefill_mma" if case == "chunked_mma" else "prefill")
    monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    if case.startswith("chunked"):
        q_lens, seq_lens = [1, 37, 130, 5], [1, 37, 300, 69]
        run_and_check(make_case(q_lens, seq_lens, 16, 2, 128, 128, False, 16), causal=causal, max_q_len=max(q_lens))
    else:
        Hq = 128 if case == "decode_group64" else 64
        seq_lens = [1, 17, 53, 300, 1000]
        run_and_check(make_case([1] * len(seq_lens), seq_lens, Hq, 2, 128, 128, False, 16, per_head=True),
                      causal=causal)


@gpu
@pytest.mark.parametrize("window", [-1, 15, 100])
@pytest.mark.parametrize("splits", ["1", "4"])
@pytest.mark.parametrize("Hq,Hkv,D", [(64, 2, 128), (48, 2, 64), (24, 2, 128), (32, 2, 64), (2, 2, 128)],
                         ids=["group32_d128", "group24_d64", "group12_d128", "group16_d64", "group1_d128"])
def test_prefill_layout_warp_split(monkeypatch, Hq, Hkv, D, splits, window):
    """Decode in the prefill layout with 2 (groups 17-32) or 4 (groups <= 16) warps per 16-row tile,
    each taking a part of every chunk's keys and merged in shared memory: ragged lengths (1, under one
    warp's part, off the chunk grid), key splits (4: some empty), windows, the LSE op."""
    set_layout(monkeypatch, "prefill")
    monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    seq_lens = [1, 9, 70, 300, 1000]
    run_window(make_case([1] * len(seq_lens), seq_lens, Hq, Hkv, D, D, False, 16, per_head=True, seed=Hq + D), window)


@gpu
@pytest.mark.parametrize("window", [-1, 0, 15, 100])
@pytest.mark.parametrize("splits", ["1", "3", "16"])
@pytest.mark.parametrize("q_lens,seq_lens", [([1] * 7, [1, 15, 16, 63, 64, 65, 1000]), ([0, 3, 1, 0], [4, 130, 6, 9]),
                                             ([5, 2, 17], [70, 300, 17])], ids=["decode", "mixed", "chunked"])
@pytest.mark.parametrize("Hq,Hkv,D", [(24, 2, 128), (40, 2, 64), (80, 2, 64), (96, 1, 128), (200, 2, 64), (4, 1, 128)],
                         ids=["group12", "group20_d64", "group40_d64", "group96", "group100_d64", "group4"])
@pytest.mark.parametrize("layout", ["prefill", "prefill_mma"])
def test_prefill_layout_odd_groups(monkeypatch, layout, Hq, Hkv, D, q_lens, seq_lens, splits, window):
    """The prefill layout forced, GQA groups that leave padding rows in a tile (12, 20, 40, 100) or
    take several row tiles (96, 100), with decode, mixed (empty sequences) and chunked batches, key
    splits and windows: padding rows must neither be written nor change the real rows (q_len > 1 on
    sm_90: the wgmma kernel, and with prefill_mma the mma.sync one)."""
    if layout == "prefill_mma" and max(q_lens) == 1:
        pytest.skip("decode takes the mma.sync kernel under both parameters")
    set_layout(monkeypatch, layout)
    monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    args = make_case(q_lens, seq_lens, Hq, Hkv, D, D, False, 16, per_head=True, seed=Hq + len(q_lens))
    run_window(args, window, max_q_len=max(q_lens))


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "prefill", "prefill_mma"])
def test_prefill_long(monkeypatch, layout):
    set_layout(monkeypatch, layout)
    args = make_case([1024], [1500], 32, 4, 128, 128, False, 64)
    run_and_check(args, max_q_len=1024)


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill", "prefill_mma"])
def test_prefill_hint_underestimates(monkeypatch, layout):
    """max_q_len = 2 but a q_len of 20 (160 rows > one 128-row prefill tile): the CTAs loop over tiles."""
    set_layout(monkeypatch, layout)
    args = make_case([20, 1, 7], [30, 5, 7], 64, 8, 128, 128, False, 16)
    run_and_check(args, max_q_len=2)


# ---------------------------------------------------------------- GPU: the sm_90a wgmma prefill kernel
SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
WGMMA_CONFIGS = [(128, "64"), (128, "96"), (64, "64"), (64, "128")]   # (D, keys per chunk)


@gpu
@pytest.mark.skipif(not SM90, reason="the wgmma prefill kernel needs sm_90")
@pytest.mark.parametrize("window", [-1, 0, 15, 100])
@pytest.mark.parametrize("splits", ["1", "3"])
@pytest.mark.parametrize("q_lens,seq_lens,hint", [([1, 37, 130, 5], [1, 37, 300, 69], 130), ([0, 3, 1, 0], [4, 130, 6, 9], 3),
                                                  ([200], [1000], 200), ([20, 1, 7], [30, 5, 7], 20),
                                                  ([20, 1, 7], [30, 5, 7], 2)],
                         ids=["chunked", "mixed", "long", "short", "hint2"])
@pytest.mark.parametrize("Hq,Hkv", [(64, 8), (12, 1), (4, 4)], ids=["gqa8", "group12", "mha"])
@pytest.mark.parametrize("D,keys", WGMMA_CONFIGS, ids=[f"d{d}_k{k}" for d, k in WGMMA_CONFIGS])
def test_prefill_wgmma_configs(monkeypatch, D, keys, Hq, Hkv, q_lens, seq_lens, hint, splits, window):
    """Every wgmma configuration forced (K2K_ATTN_PREFILL_WGMMA = keys per chunk) against the reference
    on the same FP8 cache, through the lse op: ragged chunked prefill (keys past the chunk grid, a
    prefix), empty sequences, a 200-token prefill over 1000 keys (many chunks, rescales), groups that
    leave padding rows in the 128-row tile (12) or none (8), MHA, key splits (merge), windows, and a
    max_q_len hint of 2 below the real 20 (the grid covers fewer row tiles: CTAs loop over the rest)."""
    set_layout(monkeypatch, "prefill")
    monkeypatch.setenv("K2K_ATTN_PREFILL_WGMMA", keys)
    monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    args = make_case(q_lens, seq_lens, Hq, Hkv, D, D, False, 16, per_head=True, seed=Hq + D + len(q_lens))
    run_window(args, window, max_q_len=hint)


@gpu
@pytest.mark.skipif(not SM90, reason="the wgmma prefill kernel needs sm_90")
@pytest.mark.parametrize("D,keys", WGMMA_CONFIGS, ids=[f"d{d}_k{k}" for d, k in WGMMA_CONFIGS])
def test_prefill_wgmma_forced_config_runs_wgmma(monkeypatch, D, keys):
    """A forced configuration runs the wgmma kernel with that key count (by kernel name), so the
    configuration tests above cannot pass on a silent mma.sync fallback."""
    monkeypatch.setenv("K2K_ATTN_PREFILL_WGMMA", keys)
    args = make_case([40, 9], [300, 9], 16, 2, D, D, False, 16, seed=D)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call(args, max_q_len=40)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert any(f"fp8_attention_prefill_wgmma_kernel<{D}, {keys}>" in n for n in names), names


@gpu
@pytest.mark.skipif(not SM90, reason="the wgmma prefill kernel needs sm_90")
@pytest.mark.parametrize("D", [64, 128])
def test_prefill_wgmma_is_the_sm90_prefill_default(D):
    """q_len > 1 on sm_90 runs the wgmma kernel by default (checked by kernel name, not a silent
    mma.sync fallback), under CUDA-graph capture and replay with new sequence lengths."""
    args = make_case([40, 9], [300, 9], 16, 2, D, D, False, 16, per_head=True, seed=D)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = call(args, max_q_len=40)
        torch.cuda.synchronize()
    assert any("fp8_attention_prefill_wgmma_kernel" in e.name for e in prof.events()), [e.name for e in prof.events()]
    ref = lambda: reference.fp8_kv_attention(args["q"], args["k_cache"], args["v_cache"], args["block_table"],
                                             args["seq_lens"], args["cu_seqlens_q"], args["k_scale"], args["v_scale"],
                                             args["softmax_scale"], True, 40, args["head_dim_v"])
    check_close(out, ref())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out_g = call(args, max_q_len=40)
    args["seq_lens"].copy_(torch.tensor([250, 14], dtype=torch.int32, device="cuda"))
    out_g.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    check_close(out_g, ref())


@gpu
@pytest.mark.parametrize("value", ["48", "128", "-64", "abc", "64x", ""])
def test_prefill_wgmma_knob_rejects_unknown_config(monkeypatch, value):
    """A K2K_ATTN_PREFILL_WGMMA that is not 0 or a key count of this D (128 is D 64's, the case is D
    128; text; trailing junk; empty) is an error naming the knob, on every GPU."""
    monkeypatch.setenv("K2K_ATTN_PREFILL_WGMMA", value)
    args = make_case([5], [9], 16, 2, 128, 128, False, 16)
    with pytest.raises(ValueError, match=f"K2K_ATTN_PREFILL_WGMMA={value} is not"):
        call(args, max_q_len=5)


# ---------------------------------------------------------------- GPU: graphs, compile, opcheck
# ---------------------------------------------------------------- log-sum-exp output
def lse_args(args, **kw):
    return (args["q"], args["k_cache"], args["v_cache"], args["block_table"], args["seq_lens"], args["cu_seqlens_q"],
            args["k_scale"], args["v_scale"], args["softmax_scale"], kw.get("causal", True), kw.get("max_q_len", -1),
            args["head_dim_v"], kw.get("window_left", -1))


def check_lse(lse, ref_lse):
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    assert torch.isfinite(lse).all(), "non-finite lse (unwritten rows?)"
    err = (lse.double().cpu() - ref_lse.double().cpu()).abs()
    bound = ATTN_LSE_ATOL * (1 + ref_lse.double().cpu().abs())
    assert (err <= bound).all(), f"lse max err {err.max():.3e}"


def merge_partials(o1, l1, o2, l2):
    """What an engine does with two partial attentions over disjoint key sets."""
    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m).unsqueeze(-1), torch.exp(l2 - m).unsqueeze(-1)
    return (w1 * o1.float() + w2 * o2.float()) / (w1 + w2), m + torch.log(torch.exp(l1 - m) + torch.exp(l2 - m))


def split_at_page(args, pages):
    """The same sequences as two caches: keys [0, pages * page_size) and the rest."""
    ps = args["k_cache"].shape[1]
    first, rest = dict(args), dict(args)
    first["block_table"] = args["block_table"][:, :pages].contiguous()
    first["seq_lens"] = torch.full_like(args["seq_lens"], pages * ps)
    rest["block_table"] = args["block_table"][:, pages:].contiguous()
    rest["seq_lens"] = args["seq_lens"] - pages * ps
    return first, rest


def check_merge(fn, device):
    args = make_case((1, 1, 1), (70, 100, 129), 16, 4, 64, 64, False, 16, device=device, seed=3)
    out, lse = fn(*lse_args(args, causal=False))
    first, rest = split_at_page(args, 2)
    o1, l1 = fn(*lse_args(first, causal=False))
    o2, l2 = fn(*lse_args(rest, causal=False))
    merged, merged_lse = merge_partials(o1, l1, o2, l2)
    check_close(merged.to(torch.bfloat16), out)
    check_lse(merged_lse, lse)


def test_lse_merges_partial_attentions_cpu():
    """lse makes two attentions over disjoint key sets merge into the attention over all keys."""
    check_merge(reference.fp8_kv_attention_lse, "cpu")


@gpu
def test_lse_merges_partial_attentions_cuda():
    check_merge(OPS.fp8_kv_attention_lse, "cuda")


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill", "prefill_mma", "latent"])
@pytest.mark.parametrize("splits", ["auto", "1", "3"])
@pytest.mark.parametrize("q_lens", [(1, 1, 1), (1, 5, 17)], ids=["decode", "mixed"])
def test_lse_matches_reference(monkeypatch, layout, splits, q_lens):
    """fp8_kv_attention_lse on every layout, written directly (1 split) or by the merge (3 splits)."""
    set_layout(monkeypatch, layout)
    if splits != "auto":
        monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    name = {"latent": "latent16_d576_p16", "prefill": "gqa4_d64_p64", "prefill_mma": "gqa4_d64_p64"}.get(layout, "gqa8_d128_p16")
    _, Hq, Hkv, D, DV, latent, page = next(s for s in SHAPES if s[0] == name)
    args = make_case(q_lens, (37, 300, 1000), Hq, Hkv, D, DV, latent, page, seed=len(layout) + len(q_lens))
    poison_allocator(sum(q_lens) * Hq * DV * 2 * 64)
    out, lse = OPS.fp8_kv_attention_lse(*lse_args(args))
    ref_out, ref_lse = reference.fp8_kv_attention_lse(*lse_args(args))
    check_close(out, ref_out)
    check_lse(lse, ref_lse)
    assert torch.equal(out, call(args)), "the lse op must return the plain op's output"


@gpu
def test_cuda_graph_replay_matches_eager():
    args = make_case([1] * 6, [1, 50, 333, 1024, 4000, 129], 64, 8, 128, 128, False, 16, per_head=True)
    eager = call(args)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        call(args)                                         # warm-up outside capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = call(args)
    # new queries and lengths through the same buffers: the graph must read them from the device
    args["q"].copy_((torch.randn_like(args["q"].float()) * 4).to(torch.bfloat16))
    args["seq_lens"].copy_(torch.tensor([2, 40, 300, 1000, 3999, 100], dtype=torch.int32, device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, call(args))
    assert not torch.equal(static_out, eager)


@gpu
def test_torch_compile_fullgraph_cuda():
    args = make_case([1, 1, 1], [10, 100, 1000], 16, 2, 128, 128, False, 16)
    f = torch.compile(lambda a: call(a) * 1.0, fullgraph=True)
    torch.testing.assert_close(f(args), call(args), atol=0, rtol=0)


@gpu
def test_opcheck_cuda():
    args = make_case([1, 3], [20, 40], 16, 2, 128, 128, False, 16)
    a = (args["q"], args["k_cache"], args["v_cache"], args["block_table"], args["seq_lens"], args["cu_seqlens_q"],
         args["k_scale"], args["v_scale"], args["softmax_scale"], True, 3, -1)
    torch.library.opcheck(OPS.fp8_kv_attention.default, a, test_utils=OPCHECK_UTILS)
    check_inputs_unchanged(args, lambda: call(args))


@gpu
def test_bad_inputs_cuda():
    args = make_case([1, 1], [20, 40], 16, 2, 128, 128, False, 16)
    with pytest.raises(ValueError, match="q must be bfloat16"):
        call(dict(args, q=args["q"].half()))
    with pytest.raises(ValueError, match="multiple of H_kv"):
        call(dict(args, q=args["q"][:, :15].contiguous()))
    with pytest.raises(ValueError, match="k_scale"):
        call(dict(args, k_scale=torch.ones(3, device="cuda")))
    with pytest.raises(ValueError, match="no CUDA kernel for D_qk = 96"):
        c = make_case([1], [20], 4, 2, 96, 96, False, 16)
        call(c)
    with pytest.raises(ValueError, match="head_dim_v"):
        call(dict(args, v_cache=None, v_scale=None, head_dim_v=-1))
    with pytest.raises(ValueError, match="16-byte aligned"):
        q = torch.empty(args["q"].numel() + 1, dtype=torch.bfloat16, device="cuda")[1:].view(args["q"].shape)
        call(dict(args, q=q))


# ---------------------------------------------------------------- GPU: sliding window (window_left)
# FlashAttention's window_size=(w, 0), bottom-right aligned: the query at key position
# p = seq_len - q_len + i sees keys max(0, p - w) .. p (w + 1 keys). 5000 is wider than every sequence
# here (the same keys as no window). Each case checks out and lse of every layout against the reference.
WINDOWS = [0, 1, 15, 16, 63, 100, 5000]
WINDOW_DECODE_SHAPES = [s for s in SHAPES if s[0] in ("gqa8_d128_p16", "gqa8_d128_p64", "mha_d64_p16", "gqa4_d64_p64",
                                                       "gqa16_d128_p16", "mqa128_d128_p64", "gqa4_d256_p16",
                                                       "latent16_d576_p16", "latent64_d576_p64")]
# (layout, shape): the three decode layouts on every shape, the prefill layout (decode with large
# groups) on the D 64 / 128 shapes, the latent layout on the latent shapes
WINDOW_DECODE_CASES = [(lay, s) for s in WINDOW_DECODE_SHAPES for lay in ("auto", "rows16", "rows8")] + \
                      [("prefill", s) for s in WINDOW_DECODE_SHAPES if s[3] in (64, 128) and s[3] == s[4]] + \
                      [("latent", s) for s in WINDOW_DECODE_SHAPES if s[5]]


def run_window(args, window_left, max_q_len=-1):
    """Kernel (the lse op, and the plain op's output) vs the reference on the same FP8 cache."""
    Tq, Hq = args["q"].shape[:2]
    DV = args["v_cache"].shape[3] if args["v_cache"] is not None else args["head_dim_v"]
    a = lse_args(args, max_q_len=max_q_len, window_left=window_left)
    poison_allocator(Tq * Hq * DV * 2 * 64)
    out, lse = OPS.fp8_kv_attention_lse(*a)
    torch.cuda.synchronize()
    ref_out, ref_lse = reference.fp8_kv_attention_lse(*a)
    check_close(out, ref_out)
    check_lse(lse, ref_lse)
    assert torch.equal(out, call(args, max_q_len=max_q_len, window_left=window_left)), \
        "the lse op must return the plain op's output"
    return out, lse


@gpu
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("splits", ["auto", "1", "5"])
@pytest.mark.parametrize("layout,shape", WINDOW_DECODE_CASES, ids=[f"{c[0]}-{c[1][0]}" for c in WINDOW_DECODE_CASES])
def test_window_decode_ragged(monkeypatch, layout, shape, splits, window):
    """Decode: ragged lengths (1, off the page grid, several pages), forced split counts (1 = direct
    write, 5 = merge, some splits empty when the window is short) and the launcher's split choice."""
    set_layout(monkeypatch, layout)
    if splits != "auto":
        monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    _, Hq, Hkv, D, DV, latent, page = shape
    seq_lens = [1, 17, page * 3 + 5, 300, 1000]
    run_window(make_case([1] * len(seq_lens), seq_lens, Hq, Hkv, D, DV, latent, page, per_head=True, seed=window),
               window)


@gpu
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("splits", ["auto", "3"])
@pytest.mark.parametrize("name,Hq,Hkv,D,DV,latent,page", PREFILL, ids=[s[0] for s in PREFILL])
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8", "prefill", "prefill_mma", "latent"])
def test_window_prefill_chunked(monkeypatch, name, Hq, Hkv, D, DV, latent, page, layout, splits, window):
    """Mixed q_lens (decode, fresh prefill, chunked prefill after a prefix): one tile spans several
    query positions, so its rows have different window starts. (prefill / latent layouts exist only for
    their shapes; elsewhere the knob falls back to the default, as in test_prefill_chunked.)"""
    set_layout(monkeypatch, layout)
    if splits != "auto":
        monkeypatch.setenv("K2K_ATTN_SPLITS", splits)
    q_lens = [1, 37, 130, 5]
    seq_lens = [1, 37, 300, 69]
    run_window(make_case(q_lens, seq_lens, Hq, Hkv, D, DV, latent, page, seed=window), window,
               max_q_len=max(q_lens))


@gpu
@pytest.mark.parametrize("window", [100, 1000])
@pytest.mark.parametrize("layout", ["auto", "rows16", "prefill", "prefill_mma"])
def test_window_prefill_long(monkeypatch, layout, window):
    """Many 64-key chunks: the prefill CTAs skip chunks wholly outside their rows' windows."""
    set_layout(monkeypatch, layout)
    run_window(make_case([1024, 300], [1500, 300], 32, 4, 128, 128, False, 64), window, max_q_len=1024)


@gpu
@pytest.mark.parametrize("layout", ["auto", "rows16", "rows8"])
def test_window_decode_long_context(monkeypatch, layout):
    """32K context, 4K window: the splits come from the window's length."""
    set_layout(monkeypatch, layout)
    run_window(make_case([1, 1], [32768, 20000], 64, 8, 128, 128, False, 64, per_head=True), 4095)


@gpu
@pytest.mark.parametrize("window", [0, 5, 16, 100])
@pytest.mark.parametrize("layout", ["rows16", "rows8", "prefill", "latent"])
def test_window_page8(monkeypatch, layout, window):
    """A page size that is not a multiple of 16 (per-key page lookups; a 16-key chunk spans pages)."""
    set_layout(monkeypatch, layout)
    if layout == "latent":
        args = make_case([1, 1, 9], [7, 61, 500], 16, 1, 576, 512, True, 8)
    else:
        args = make_case([1, 1, 9], [7, 61, 500], 32, 4, 128, 128, False, 8)
    run_window(args, window, max_q_len=9)


@gpu
@pytest.mark.parametrize("page", [8, 16, 64])
@pytest.mark.parametrize("layout", ["rows16", "rows8", "prefill", "latent"])
def test_window_ignores_pages_before_the_window(monkeypatch, layout, page):
    """What an engine does with pages that left the window: it frees them and the block table may point
    anywhere. Here they point to a page of E4M3 NaN bytes; the result must equal the reference on the
    intact cache (a kernel that let those bytes into the softmax or the PV product would give NaN)."""
    set_layout(monkeypatch, layout)
    window = 40
    q_lens, seq_lens = [1, 1, 6], [300, 1000, 700]
    if layout == "latent":
        args = make_case(q_lens, seq_lens, 16, 1, 576, 512, True, page)
    else:
        args = make_case(q_lens, seq_lens, 32, 4, 128, 128, False, page)
    ref_out, ref_lse = reference.fp8_kv_attention_lse(*lse_args(args, max_q_len=6, window_left=window))
    used = {int(args["block_table"][b, i]) for b, L in enumerate(seq_lens) for i in range((L + page - 1) // page)}
    nan_page = min(set(range(args["k_cache"].shape[0])) - used)   # a spare page (make_case keeps 3), filled with NaN
    bad = dict(args)
    for name in ("k_cache", "v_cache"):
        if args[name] is not None:
            c = args[name].clone()
            c.view(torch.uint8)[nan_page] = 0x7F
            bad[name] = c
    bt = args["block_table"].clone()
    for b, (nq, L) in enumerate(zip(q_lens, seq_lens)):
        first_key = max(0, L - nq - window)                  # the window start of the sequence's first query
        bt[b, :first_key // page] = nan_page                 # pages wholly before every row's window
    bad["block_table"] = bt
    out, lse = OPS.fp8_kv_attention_lse(*lse_args(bad, max_q_len=6, window_left=window))
    check_close(out, ref_out)
    check_lse(lse, ref_lse)


@gpu
@pytest.mark.parametrize("layout", ["rows16", "rows8", "prefill", "latent"])
def test_window_covering_the_sequence_is_no_window(monkeypatch, layout):
    """window_left >= every p (here seq_len - 1 of the longest sequence, and larger) reads the same keys in
    the same order as no window: bit-identical output and lse (split count pinned: the launcher's choice
    would follow the window's length)."""
    set_layout(monkeypatch, layout)
    monkeypatch.setenv("K2K_ATTN_SPLITS", "3")
    q_lens, seq_lens = [1, 4, 1], [50, 200, 333]
    if layout == "latent":
        args = make_case(q_lens, seq_lens, 16, 1, 576, 512, True, 16)
    else:
        args = make_case(q_lens, seq_lens, 16, 4, 64, 64, False, 16)
    base_out, base_lse = OPS.fp8_kv_attention_lse(*lse_args(args, max_q_len=4))
    for w in (332, 333, 10 ** 6, 2 ** 31 - 1):
        out, lse = OPS.fp8_kv_attention_lse(*lse_args(args, max_q_len=4, window_left=w))
        assert torch.equal(out, base_out) and torch.equal(lse, base_lse), f"window_left={w}"


def check_window_merge(fn, device):
    """A window that straddles a page boundary X = two partial attentions merged by their lse: keys
    [L-1-w, X) (a window of X - L + w over the cache of the first X keys) and [X, L) (the rest)."""
    L, w, pages = 160, 40, 8                                 # page 16: X = 128; window keys 119..159
    args = make_case((1,), (L,), 16, 4, 64, 64, False, 16, device=device, seed=5)
    out, lse = fn(*lse_args(args, window_left=w))
    first, rest = split_at_page(args, pages)
    X = pages * 16
    o1, l1 = fn(*lse_args(first, window_left=X - L + w))
    o2, l2 = fn(*lse_args(rest, window_left=w))
    merged, merged_lse = merge_partials(o1, l1, o2, l2)
    check_close(merged.to(torch.bfloat16), out)
    check_lse(merged_lse, lse)
    full_out, _ = fn(*lse_args(args))
    assert not torch.allclose(full_out.float(), out.float(), atol=1e-2), "the window must change the result"


@gpu
def test_window_merges_like_lse_cuda():
    check_window_merge(OPS.fp8_kv_attention_lse, "cuda")


@gpu
def test_window_bad_inputs_cuda():
    args = make_case([1, 1], [20, 40], 16, 2, 128, 128, False, 16)
    with pytest.raises(ValueError, match="window_left must be an int >= -1"):
        call(args, window_left=-2)
    with pytest.raises(ValueError, match="window_left must be an int >= -1"):
        OPS.fp8_kv_attention_lse(*lse_args(args, window_left=-2))
    with pytest.raises(ValueError, match="needs causal=True"):
        call(args, causal=False, window_left=4)
    call(args, causal=False, window_left=-1)               # no window: non-causal is fine


# ---------------------------------------------------------------- CPU: reference, fake, errors
def _sdpa_oracle(args, causal):
    """Independent check of the reference: dequantize and run SDPA per sequence (CPU, fp32)."""
    q, kc, vc = args["q"], args["k_cache"], args["v_cache"]
    Hq, D = q.shape[1:]
    _, ps, Hkv, _ = kc.shape
    DV = vc.shape[3] if vc is not None else args["head_dim_v"]
    ks = args["k_scale"].float().reshape(-1)
    vs = args["v_scale"].float().reshape(-1) if vc is not None else ks
    outs = []
    cu = args["cu_seqlens_q"].tolist()
    for b, L in enumerate(args["seq_lens"].tolist()):
        nq = cu[b + 1] - cu[b]
        if nq == 0:
            continue
        pages = args["block_table"][b, :(L + ps - 1) // ps].long()
        k = kc[pages].reshape(-1, Hkv, D)[:L].float() * ks.reshape(-1, 1) if ks.numel() > 1 else \
            kc[pages].reshape(-1, Hkv, D)[:L].float() * ks
        src = vc if vc is not None else kc
        v = src[pages].reshape(-1, Hkv, src.shape[3])[:L, :, :DV].float()
        v = v * (vs.reshape(-1, 1) if vs.numel() > 1 else vs)
        mask = None
        if causal:
            mask = torch.ones(nq, L, dtype=torch.bool).tril(L - nq)
        o = torch.nn.functional.scaled_dot_product_attention(
            q[cu[b]:cu[b + 1]].float().transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
            scale=args["softmax_scale"], enable_gqa=True)
        outs.append(o.transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("latent", [False, True])
def test_reference_matches_sdpa_cpu(latent):
    D, DV = (576, 512) if latent else (64, 64)
    args = make_case([1, 4, 2], [9, 40, 2], 8, 1 if latent else 2, D, DV, latent, 16, per_head=not latent,
                     device="cpu")
    ref = call(args, max_q_len=4)                          # CPU -> the reference
    torch.testing.assert_close(ref.float(), _sdpa_oracle(args, True), atol=ATTN_ATOL, rtol=ATTN_RTOL)
    ref = call(args, causal=False)
    torch.testing.assert_close(ref.float(), _sdpa_oracle(args, False), atol=ATTN_ATOL, rtol=ATTN_RTOL)


def test_opcheck_cpu():
    args = make_case([1, 2], [5, 9], 8, 2, 64, 64, False, 16, device="cpu")
    a = (args["q"], args["k_cache"], args["v_cache"], args["block_table"], args["seq_lens"], args["cu_seqlens_q"],
         args["k_scale"], args["v_scale"], args["softmax_scale"], True, -1, -1)
    torch.library.opcheck(OPS.fp8_kv_attention.default, a, test_utils=OPCHECK_UTILS)
    check_inputs_unchanged(args, lambda: call(args))


def test_fake_shapes_latent():
    args = make_case([1, 1], [5, 9], 16, 1, 576, 512, True, 16, device="cpu")
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fa = {k: (mode.from_tensor(v) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
        out = call(fa)
    assert tuple(out.shape) == (2, 16, 512) and out.dtype == torch.bfloat16


def test_torch_compile_fullgraph_cpu():
    args = make_case([1, 1], [5, 9], 8, 2, 64, 64, False, 16, device="cpu")
    f = torch.compile(lambda a: call(a), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(args), call(args), atol=0, rtol=0)


def test_bad_inputs_cpu():
    args = make_case([1, 1], [5, 9], 8, 2, 64, 64, False, 16, device="cpu")
    with pytest.raises(ValueError, match="k_cache head dim"):
        call(dict(args, k_cache=args["k_cache"][..., :32].contiguous()))
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        call(dict(args, cu_seqlens_q=args["cu_seqlens_q"][:2].contiguous()))


# ---------------------------------------------------------------- CPU: sliding window of the reference
def _brute_force_window(args, window_left):
    """Independent oracle of the windowed reference: for every (sequence, query), the visible keys are
    listed by a loop straight from the definition (p = seq_len - q_len + i; keys j with
    max(0, p - w) <= j <= p), each key's slot looked up in the block table, softmax in fp64."""
    q, kc, vc, bt = args["q"], args["k_cache"], args["v_cache"], args["block_table"]
    Tq, Hq, D = q.shape
    _, ps, Hkv, _ = kc.shape
    DV = vc.shape[3] if vc is not None else args["head_dim_v"]
    ks = args["k_scale"].double().reshape(-1).expand(Hkv)
    vs = (args["v_scale"].double().reshape(-1).expand(Hkv) if vc is not None else ks)
    kflat = kc.reshape(-1, Hkv, D).double()
    vflat = vc.reshape(-1, Hkv, DV).double() if vc is not None else kflat[..., :DV]
    heads = torch.arange(Hq) // (Hq // Hkv)                 # KV head of each query head
    out = torch.zeros(Tq, Hq, DV, dtype=torch.float64)
    lse = torch.zeros(Tq, Hq, dtype=torch.float64)
    cu = args["cu_seqlens_q"].tolist()
    for b, L in enumerate(args["seq_lens"].tolist()):
        nq = cu[b + 1] - cu[b]
        for i in range(nq):
            pos = L - nq + i
            keys = [j for j in range(L) if j <= pos and (window_left < 0 or j >= pos - window_left)]
            slots = [int(bt[b, j // ps]) * ps + j % ps for j in keys]
            k = kflat[slots][:, heads] * ks[heads].reshape(1, -1, 1)       # [n, Hq, D]
            v = vflat[slots][:, heads] * vs[heads].reshape(1, -1, 1)
            s = torch.einsum("hd,nhd->hn", q[cu[b] + i].double(), k) * args["softmax_scale"]
            lse[cu[b] + i] = torch.logsumexp(s, dim=-1)
            out[cu[b] + i] = torch.einsum("hn,nhd->hd", torch.softmax(s, dim=-1), v)
    return out, lse


@pytest.mark.parametrize("window", [0, 1, 15, 16, 63, 100, 5000])
@pytest.mark.parametrize("page", [16, 64])
@pytest.mark.parametrize("q_lens", [(1, 1, 1, 1), (1, 5, 17, 3)], ids=["decode", "mixed"])
@pytest.mark.parametrize("latent", [False, True], ids=["gqa", "latent"])
def test_reference_window_matches_brute_force_cpu(latent, q_lens, page, window):
    Hq, Hkv, D, DV = (8, 1, 576, 512) if latent else (8, 2, 64, 64)
    args = make_case(list(q_lens), [1, 17, 130, 70], Hq, Hkv, D, DV, latent, page, per_head=not latent,
                     device="cpu", seed=window)
    out, lse = reference.fp8_kv_attention_lse(*lse_args(args, window_left=window))
    want_out, want_lse = _brute_force_window(args, window)
    torch.testing.assert_close(out.double(), want_out, atol=ATTN_ATOL, rtol=ATTN_RTOL)
    torch.testing.assert_close(lse.double(), want_lse, atol=REF_LSE_TOL, rtol=REF_LSE_TOL)
    if window < 100:                                        # a short window must change some rows
        full, _ = reference.fp8_kv_attention_lse(*lse_args(args))
        assert not torch.equal(full, out)


def test_reference_window0_is_own_value_cpu():
    """window_left = 0: one visible key (the query's own position), so out = its dequantized V row and
    lse = its own scaled score."""
    args = make_case([1, 3], [9, 40], 4, 2, 64, 64, False, 16, device="cpu")
    out, lse = reference.fp8_kv_attention_lse(*lse_args(args, window_left=0))
    kc, vc, bt = args["k_cache"], args["v_cache"], args["block_table"]
    for t, (b, pos) in enumerate([(0, 8), (1, 37), (1, 38), (1, 39)]):
        slot = int(bt[b, pos // 16]) * 16 + pos % 16
        for h in range(4):
            v = vc.reshape(-1, 2, 64)[slot, h // 2].float() * args["v_scale"]
            k = kc.reshape(-1, 2, 64)[slot, h // 2].float() * args["k_scale"]
            torch.testing.assert_close(out[t, h].float(), v.to(torch.bfloat16).float(), atol=0, rtol=0)
            torch.testing.assert_close(lse[t, h], (args["q"][t, h].float() * k).sum() * args["softmax_scale"],
                                       atol=1e-4, rtol=1e-5)


def test_window_merges_like_lse_cpu():
    check_window_merge(reference.fp8_kv_attention_lse, "cpu")


def test_window_wrapper_and_compile_cpu():
    args = make_case([1, 4], [9, 40], 8, 2, 64, 64, False, 16, device="cpu")
    want = reference.fp8_kv_attention_lse(*lse_args(args, max_q_len=4, window_left=7))
    got = k2kernels.fp8_kv_attention(args["q"], args["k_cache"], args["v_cache"], args["block_table"],
                                     args["seq_lens"], args["cu_seqlens_q"], args["k_scale"], args["v_scale"],
                                     args["softmax_scale"], max_q_len=4, return_lse=True, window_left=7)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    f = torch.compile(lambda a: call(a, window_left=7), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(args), want[0], atol=0, rtol=0)
    a = lse_args(args, max_q_len=4, window_left=7)
    torch.library.opcheck(OPS.fp8_kv_attention_lse.default, a, test_utils=OPCHECK_UTILS)
    torch.library.opcheck(OPS.fp8_kv_attention.default, a, test_utils=OPCHECK_UTILS)


def test_window_bad_inputs_cpu():
    args = make_case([1, 1], [5, 9], 8, 2, 64, 64, False, 16, device="cpu")
    for bad in (-2, -100):
        with pytest.raises(ValueError, match=r"k2kernels\.fp8_kv_attention: window_left must be an int >= -1"):
            call(args, window_left=bad)
        with pytest.raises(ValueError, match="window_left must be an int >= -1"):
            OPS.fp8_kv_attention_lse(*lse_args(args, window_left=bad))
    with pytest.raises(ValueError, match="window_left = 4 needs causal=True"):
        call(args, causal=False, window_left=4)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:          # the fake raises the same
        fa = {k: (mode.from_tensor(v) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
        with pytest.raises(ValueError, match="window_left must be an int >= -1"):
            call(fa, window_left=-2)
    call(args, causal=False, window_left=-1)
