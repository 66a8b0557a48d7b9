"""Expert-parallel MoE forward: each rank holds a subset of the experts (sharding.shard_ep) and its
own tokens; token rows travel to the rank that owns their expert and the results travel back.

    route (on the source rank, replicated gate)
    -> all-to-all dispatch: one row per (token, slot) pair, grouped by owner rank; the expert id
       rides along as two extra bf16 columns (an int32 viewed as 2 x bf16: one collective, not two)
    -> local_experts on the owner (k = 1 per received row, weight 1; the row's expert via expert_map)
    -> all-to-all back to the source, rows put back in pair order
    -> weighted combine on the source in fp32, in the same order as moe_forward.

Each pair's expert output is the same bf16 row moe_forward computes, and the combine is the same
fp32 sum over the k slots, so EP reproduces the single-process result up to GEMM summation order.

Two dispatch modes:
  exact  (default) variable splits: only real pairs move. torch.distributed.all_to_all_single takes
         its split sizes as host lists, so the per-rank counts (exchanged on device with one small
         all_to_all) are copied to the host once per forward: ONE host sync, not graph-capturable.
  padded each (source, owner) pair of ranks gets a fixed slot of `capacity` rows (capacity >= the
         source's T * k, the worst case of all its pairs on one owner); empty slots carry expert
         id -1, which moe_align routes nowhere. No host sync, fixed shapes, CUDA-graph capturable,
         at the price of moving world * capacity rows each way: for decode batches (small T).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from ..loaders import NVFP4MoEWeights
from .local import local_experts, route
from .sharding import ep_owner, shard_ep

MODES = ("exact", "padded")
_ID_COLS = 2              # an int32 expert id rides as 2 bf16 columns of the dispatched row


@dataclass
class EPLayer:
    """One rank's part of an expert-parallel MoE layer (router replicated, experts partitioned)."""
    cfg: object                   # MoEConfig of the whole layer (experts = global count)
    gate: torch.Tensor            # [E, H] bf16, replicated
    bias: torch.Tensor            # [E] fp32, replicated
    weights: NVFP4MoEWeights      # this rank's experts, increasing global id
    owner: torch.Tensor           # int32 [E]: rank of each global expert
    expert_map: torch.Tensor      # int32 [E]: local index on this rank, -1 elsewhere

    @classmethod
    def from_layer(cls, layer, rank: int, world: int, owner: Optional[torch.Tensor] = None) -> "EPLayer":
        owner = ep_owner(layer.cfg.experts, world, layer.gate.device) if owner is None else owner
        local, emap = shard_ep(layer.weights, owner, rank)
        return cls(layer.cfg, layer.gate, layer.bias, local, owner.to(layer.gate.device), emap.to(layer.gate.device))


def _alloc(shape, dtype, device) -> torch.Tensor:
    """Receive buffers; every element is written by the collective. Tests replace this function
    with a NaN/0xFF-filling one to prove no unwritten byte reaches the output."""
    return torch.empty(shape, dtype=dtype, device=device)


def _pack(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[n, H] bf16 + [n] int32 -> [n, H + 2] bf16 (id bytes reinterpreted, never converted)."""
    return torch.cat([rows, ids.to(torch.int32).reshape(-1, 1).view(torch.bfloat16)], dim=1)


def _unpack(buf: torch.Tensor, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    return buf[:, :H], buf[:, H:].contiguous().view(torch.int32).reshape(-1)


def _check(ep: EPLayer, x: torch.Tensor, mode: str) -> None:
    H = ep.cfg.hidden
    if x.dtype != torch.bfloat16 or x.dim() != 2 or x.shape[1] != H:
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: x must be bfloat16 [T, {H}]; "
                         f"got {str(x.dtype).replace('torch.', '')} {list(x.shape)}")
    if mode not in MODES:
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: mode must be one of {MODES}; got {mode!r}")
    if ep.owner.shape != (ep.cfg.experts,):
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: owner must be int32 [{ep.cfg.experts}]; "
                         f"got {list(ep.owner.shape)}")


def ep_moe_forward(ep: EPLayer, x: torch.Tensor, group: Optional[dist.ProcessGroup] = None,
                   mode: str = "exact", capacity: Optional[int] = None,
                   stats: Optional[dict] = None) -> torch.Tensor:
    """x [T, H] bf16 (this rank's tokens; T may differ between ranks, may be 0) -> [T, H] bf16.

    mode='padded' needs `capacity` (pairs per source->owner slot, the same on every rank,
    >= T * top_k here; default T * top_k, which is only valid when every rank has the same T).
    If `stats` is a dict, 'dispatch_rows'/'dispatch_bytes' (rows and bytes this rank sent each way,
    counting its own) are added: the benchmark's bytes-per-token figure."""
    world = dist.get_world_size(group)
    _check(ep, x, mode)
    T, H = x.shape
    k = ep.cfg.top_k
    dev = x.device
    topk_w, ids = route(ep, x)
    flat_ids = ids.reshape(-1)
    dest = ep.owner[flat_ids.long()].long()                      # owner rank of each pair p = t*k + j
    order = torch.sort(dest, stable=True).indices                # pairs by owner, p order within
    payload = _pack(x[order // k], flat_ids[order])
    # scatter_add, not bincount: CUDA bincount reads max(input) on the host (a sync, breaks graph capture)
    counts = torch.zeros(world, dtype=torch.int64, device=dev).scatter_add_(0, dest, torch.ones_like(dest))
    W2 = H + _ID_COLS

    if mode == "exact":
        recv_counts = _alloc((world,), counts.dtype, dev)
        dist.all_to_all_single(recv_counts, counts, group=group)
        send_splits, recv_splits = counts.tolist(), recv_counts.tolist()     # the one host sync
        recv = _alloc((sum(recv_splits), W2), torch.bfloat16, dev)
        dist.all_to_all_single(recv, payload, recv_splits, send_splits, group=group)
        rx, rid = _unpack(recv, H)
        y = _experts(ep, rx, rid)
        back = _alloc((T * k, H), torch.bfloat16, dev)
        dist.all_to_all_single(back, y, send_splits, recv_splits, group=group)
        sent_rows = T * k
    else:
        cap = T * k if capacity is None else int(capacity)
        if cap < T * k:
            raise ValueError(f"k2kernels.parallel.ep_moe_forward: capacity must be >= T * top_k = {T * k} "
                             f"(all of a rank's pairs may go to one owner); got {cap}")
        dsorted = dest[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = dsorted * cap + (torch.arange(T * k, device=dev) - starts[dsorted])   # row in [world*cap]
        send = torch.zeros(world * cap, W2, dtype=torch.bfloat16, device=dev)
        send[:, H:] = torch.full((1, 1), -1, dtype=torch.int32, device=dev).view(torch.bfloat16)  # empty: id -1
        send[slot] = payload
        recv = _alloc((world * cap, W2), torch.bfloat16, dev)
        dist.all_to_all_single(recv, send, group=group)
        rx, rid = _unpack(recv, H)
        y = _experts(ep, rx, rid)                                 # empty slots come back as 0 rows
        back_all = _alloc((world * cap, H), torch.bfloat16, dev)
        dist.all_to_all_single(back_all, y, group=group)
        back = back_all[slot]
        sent_rows = world * cap
    y_pairs = torch.empty_like(back)
    y_pairs[order] = back
    if stats is not None:
        stats["dispatch_rows"] = stats.get("dispatch_rows", 0) + sent_rows
        stats["dispatch_bytes"] = stats.get("dispatch_bytes", 0) + sent_rows * (W2 + H) * 2
    out = (y_pairs.float().reshape(T, k, H) * topk_w.unsqueeze(-1)).sum(1)
    return out.to(torch.bfloat16)


def _experts(ep: EPLayer, rx: torch.Tensor, rid: torch.Tensor) -> torch.Tensor:
    """Received rows -> their expert's output (k = 1, weight 1: the source applies the top-k weight,
    as moe_forward does, so the rounding matches the single-process layer)."""
    ones = torch.ones(rid.shape[0], 1, dtype=torch.float32, device=rx.device)
    return local_experts(ep.weights, rx.contiguous(), ones, rid.reshape(-1, 1), ep.expert_map)
