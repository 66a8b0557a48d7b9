"""Reference of moe_align: group the (token, slot) pairs of ids [T, k] by expert.

Pair p = t * k + j. Returns
  expert_offsets [E+1] int32  rows of expert e are sorted positions [off[e], off[e+1])
  sorted_pairs   [T*k] int32  pair index at each sorted position, stable by p within an expert;
                              pairs not on this rank (expert_map -> -1) follow after off[E], in p order
  inverse        [T*k] int32  sorted position of pair p, or -1 if the pair is not on this rank
  padded_offsets [E+1] int32  the same groups with each expert's count rounded up to block_size
"""
from __future__ import annotations

import torch

from .._checks import check_same_device, check_tensor, fail

OP = "moe_align"


def check_moe_align(ids, num_experts, block_size, expert_map) -> None:
    check_tensor(OP, "ids", ids, dtypes=(torch.int32, torch.int64), dim=2, expected="int32/int64 [T, k]")
    if num_experts < 1:
        fail(OP, f"num_experts must be >= 1; got {num_experts}")
    if block_size < 1:
        fail(OP, f"block_size must be >= 1; got {block_size}")
    if expert_map is not None:
        check_tensor(OP, "expert_map", expert_map, dtypes=(torch.int32,), dim=1,
                     expected="int32 [E_global] (global -> local expert, -1 = not on this rank)")
    check_same_device(OP, ids=ids, expert_map=expert_map)


def moe_align(ids, num_experts, block_size=1, expert_map=None):
    check_moe_align(ids, num_experts, block_size, expert_map)
    dev = ids.device
    flat = ids.reshape(-1).long()
    n_global = expert_map.shape[0] if expert_map is not None else num_experts
    if flat.numel() and (flat.min() < 0 or flat.max() >= n_global):
        fail(OP, f"ids must be in [0, {n_global}); got range [{int(flat.min())}, {int(flat.max())}]")
    local = expert_map.long()[flat] if expert_map is not None else flat
    if local.numel() and local.max() >= num_experts:
        fail(OP, f"expert_map values must be < num_experts = {num_experts}")
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
