"""Reference of moe_align: group the (token, slot) pairs of ids [T, k] by expert.

Pair p = t * k + j. Returns
  expert_offsets [E+1] int32  rows of expert e are sorted positions [off[e], off[e+1])
  sorted_pairs   [T*k] int32  pair index at each sorted position, stable by p within an expert;
                              pairs not on this rank (expert_map -> -1) follow after off[E], in p order
  inverse        [T*k] int32  sorted position of pair p, or -1 if the pair is not on this rank
  padded_offsets [E+1] int32  the same groups with each expert's count rounded up to block_size

A pair is "not on this rank" when expert_map maps its id to -1, and also when its id is outside
[0, E_global) (E_global = len(expert_map), else num_experts) or expert_map maps it outside
[0, num_experts): the CUDA kernel cannot raise on values without a host sync, so it never reads or
writes out of bounds and routes such pairs nowhere (inverse -1); this reference does the same so
both agree. Deterministic: the result depends only on the input.
"""
from __future__ import annotations

import torch

from .._checks import check_same_device, check_tensor, fail

OP = "moe_align"
MAX_EXPERTS = 8192     # the CUDA kernel keeps per-warp histograms of E+1 counters in shared memory


def check_moe_align(ids, num_experts, block_size, expert_map) -> None:
    check_tensor(OP, "ids", ids, dtypes=(torch.int32, torch.int64), dim=2, expected="int32/int64 [T, k]")
    if not 1 <= num_experts <= MAX_EXPERTS:
        fail(OP, f"num_experts must be in [1, {MAX_EXPERTS}]; got {num_experts}")
    if block_size < 1:
        fail(OP, f"block_size must be >= 1; got {block_size}")
    n = ids.shape[0] * ids.shape[1]
    if n + num_experts * (block_size - 1) >= 2 ** 31:
        fail(OP, f"T*k + num_experts*(block_size-1) must be < 2^31 (int32 positions); got T*k={n}, "
                 f"num_experts={num_experts}, block_size={block_size}")
    if expert_map is not None:
        check_tensor(OP, "expert_map", expert_map, dtypes=(torch.int32,), dim=1,
                     expected="int32 [E_global] (global -> local expert, -1 = not on this rank)")
    check_same_device(OP, ids=ids, expert_map=expert_map)


def moe_align(ids, num_experts, block_size=1, expert_map=None):
    check_moe_align(ids, num_experts, block_size, expert_map)
    dev = ids.device
    flat = ids.reshape(-1).long()
    n_global = expert_map.shape[0] if expert_map is not None else num_experts
    in_range = (flat >= 0) & (flat < n_global)
    safe = torch.where(in_range, flat, torch.zeros_like(flat))
    local = expert_map.long()[safe] if expert_map is not None else safe
    on_rank = in_range & (local >= 0) & (local < num_experts)
    local = torch.where(on_rank, local, torch.full_like(local, -1))
    key = torch.where(local < 0, torch.full_like(local, num_experts), local)
    order = torch.sort(key, stable=True).indices
    counts = torch.bincount(key, minlength=num_experts + 1)[:num_experts]
    offsets = torch.zeros(num_experts + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(counts, 0)
    padded = torch.zeros_like(offsets)
    padded[1:] = torch.cumsum((counts + block_size - 1) // block_size * block_size, 0)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=dev)
    inverse = torch.where(local < 0, torch.full_like(inverse, -1), inverse)
    i32 = torch.int32
    return offsets.to(i32), order.to(i32), inverse.to(i32), padded.to(i32)
