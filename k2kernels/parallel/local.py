"""The local expert computation that both TP and EP forwards call: THE ONE PLACE to swap in the
fused_moe op (issue 7) once it lands.

`local_experts` is the post-routing half of k2kernels.moe_layer.moe_forward, written with the same
ops in the same order (moe_align -> gather -> moe_gemm gate_up -> SiLU*up -> moe_gemm down ->
weighted combine), so that on the full weights it reproduces moe_forward bit for bit (tested). It
adds what the parallel forwards need and moe_forward lacks:
  - an `expert_map` (EP): pairs whose expert is not on this rank contribute nothing (moe_align
    gives them inverse -1; they are masked, never indexed);
  - routing done by the caller (EP routes on the source rank, computes on the owner).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import ops
from ..loaders import NVFP4MoEWeights


def local_experts(weights: NVFP4MoEWeights, x: torch.Tensor, topk_w: torch.Tensor, topk_ids: torch.Tensor,
                  expert_map: Optional[torch.Tensor] = None) -> torch.Tensor:
    """out[t] = sum_j topk_w[t, j] * expert_{topk_ids[t, j]}(x[t]) over the pairs whose expert is on
    this rank; x [T, H] bf16, topk_w [T, k] fp32, topk_ids [T, k] int32 (global ids when expert_map
    [E_global] int32 is given, local ids otherwise) -> [T, H] bf16 (combine in fp32, one rounding).

    SWAP POINT: when torch.ops.k2kernels.fused_moe exists, this body becomes one call to it with the
    same arguments; the tests in tests/test_parallel.py (local_experts == moe_forward, TP/EP vs
    single process) then check the fused op under TP and EP unchanged.
    """
    T, k = topk_ids.shape
    E = weights.num_experts
    I = weights.w13.shape[1] // 2
    offsets, pairs, inverse, _ = ops.moe_align(topk_ids, E, 1, expert_map)
    a = x[(pairs // k).long()]
    h = ops.moe_gemm(a, weights.w13, weights.w13_scale, weights.w13_alpha, offsets)
    act = (F.silu(h[:, :I].float()) * h[:, I:].float()).to(torch.bfloat16)
    y = ops.moe_gemm(act, weights.w2, weights.w2_scale, weights.w2_alpha, offsets)
    inv = inverse.long()
    present = inv >= 0
    # pairs not on this rank -> 0 by select, not by multiplying: rows at or past offsets[E] (the
    # foreign pairs' slots) are never written by the moe_gemm kernel and may hold NaN
    rows = torch.where(present.unsqueeze(-1), y.float()[inv.clamp_min(0)], 0.0)
    out = (rows.reshape(T, k, -1) * topk_w.unsqueeze(-1)).sum(1)
    return out.to(torch.bfloat16)


def route(layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The router step of moe_forward (fp32 gate GEMM + topk_router): -> (topk_w [T, k] fp32, ids [T, k] int32)."""
    cfg = layer.cfg
    logits = x.float() @ layer.gate.float().t()
    return ops.topk_router(logits, cfg.top_k, layer.bias, cfg.scoring, renormalize=True,
                           routed_scaling_factor=cfg.routed_scaling_factor)
