"""Tensor-parallel MoE forward: every rank holds all experts' I/W slice (sharding.shard_tp_layer)
and the same tokens; each computes its partial output and one all-reduce sums them.

Why this is the whole algorithm: with gate_up split by output rows as [gate_r; up_r], each rank's
SiLU(gate_r) * up_r is exactly the slice r of the unsharded activation, and the down projection is
linear in its K dim, so sum_r down_r(act_r) = down(act). The top-k weights multiply each partial
(linear, so they commute with the sum). What differs from one process is rounding only: each
rank's down GEMM output and its combined partial are rounded to bf16 before the sum
(tests/tolerances.py: PARALLEL_TP_REL_FRO says by how much).

No host sync, fixed shapes: capturable in a CUDA graph with NCCL (not run here: no multi-GPU
machine was available; see docs/parallel.md).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from .local import local_experts, route


def tp_moe_forward(layer_shard, x: torch.Tensor, group: Optional[dist.ProcessGroup] = None,
                   reduce_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """x [T, H] bf16, identical on every rank of `group` -> [T, H] bf16, identical on every rank.

    layer_shard: a MoELayer whose weights are this rank's TP shard (sharding.shard_tp_layer).
    reduce_dtype: bf16 (what engines all-reduce: half the bytes) or fp32 (partials summed without
    intermediate rounding; the result is rounded once to bf16)."""
    if reduce_dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"k2kernels.parallel.tp_moe_forward: reduce_dtype must be bfloat16 or float32; "
                         f"got {reduce_dtype}")
    if x.dtype != torch.bfloat16 or x.dim() != 2 or x.shape[1] != layer_shard.cfg.hidden:
        raise ValueError(f"k2kernels.parallel.tp_moe_forward: x must be bfloat16 [T, {layer_shard.cfg.hidden}]; "
                         f"got {str(x.dtype).replace('torch.', '')} {list(x.shape)}")
    topk_w, ids = route(layer_shard, x)           # replicated gate: every rank picks the same experts
    partial = local_experts(layer_shard.weights, x, topk_w, ids)
    buf = partial if reduce_dtype == torch.bfloat16 else partial.float()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.to(torch.bfloat16)
