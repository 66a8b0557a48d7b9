"""Small random inputs for the fused_moe family's ops (merged into inputs.ALL for test_ops.py)."""
from __future__ import annotations

import torch

from k2kernels import nvfp4

# tiny layer: H and I multiples of 128 so the CUDA moe_gemm takes its fast streaming path too
TINY = dict(T=5, H=128, I=128, E=8, k=3)


def moe_gather_args(device="cpu", T=5, H=64, k=3):
    x = torch.randn(T, H, device=device).to(torch.bfloat16)
    pairs = torch.randperm(T * k, device=device).to(torch.int32)
    return (x, pairs, k)


def moe_silu_mul_args(device="cpu", M=7, I=64):
    return (torch.randn(M, 2 * I, device=device).to(torch.bfloat16),)


def moe_combine_args(device="cpu", T=4, k=3, H=64, shared=True):
    M = T * k
    y = torch.randn(M, H, device=device).to(torch.bfloat16)
    inv = torch.randperm(M, device=device).to(torch.int32)
    inv[1] = -1                               # a pair on another rank (EP)
    w = torch.rand(T, k, device=device)
    s = torch.randn(T, H, device=device).to(torch.bfloat16) if shared else None
    return (y, inv, w, s)


def fused_moe_layer(device="cpu", T=5, H=128, I=128, E=8, k=3, seed=0):
    """(x, logits, bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha) with NVFP4 weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(torch.bfloat16)
    logits = torch.randn(T, E, generator=g)
    bias = torch.randn(E, generator=g) * 0.05
    w13, s13, a13 = nvfp4.quantize_weight(torch.randn(E, 2 * I, H, generator=g) * H ** -0.5)
    w2, s2, a2 = nvfp4.quantize_weight(torch.randn(E, H, I, generator=g) * I ** -0.5)
    t = (x, logits, bias, w13, s13, a13.float(), w2, s2, a2.float())
    return tuple(v.to(device) for v in t)


def fused_moe_args(device="cpu", shared=True, expert_map=False, workspace=True, **kw):
    from k2kernels.reference.fused_moe import workspace_bytes
    x, logits, bias, w13, s13, a13, w2, s2, a2 = fused_moe_layer(device, **kw)
    T, H = x.shape
    E, I, k = w13.shape[0], w13.shape[1] // 2, kw.get("k", 3)
    emap = None
    if expert_map:                            # two ranks: this one holds the odd global experts
        emap = torch.full((E,), -1, dtype=torch.int32)
        emap[1::2] = torch.arange(E // 2, dtype=torch.int32)
        w13, s13, a13, w2, s2, a2 = (t[1::2].contiguous() for t in (w13, s13, a13, w2, s2, a2))
        emap = emap.to(device)
    so = (torch.randn(T, H) * 0.1).to(torch.bfloat16).to(device) if shared else None
    ws = torch.empty(workspace_bytes(T, H, I, k), dtype=torch.uint8, device=device) if workspace else None
    return (x, logits, bias, w13, s13, a13, w2, s2, a2, k, "sigmoid", 1, 1, True, 2.5, emap, so, "bf16",
            None, None, "linear", ws)


FUSED_MOE_ARGS = {
    "moe_gather": moe_gather_args,
    "moe_silu_mul": moe_silu_mul_args,
    "moe_combine": moe_combine_args,
    "fused_moe": fused_moe_args,
}
