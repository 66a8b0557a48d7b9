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

dedup=True (DeepEP-style) sends one row per (token, owner rank) instead of one per pair, carrying
the token's k ids (-1 for slots owned elsewhere) and k weights (fp32, also as bf16 columns); the
owner returns its slots' weighted sum in bf16 and the source adds the owners' partials in rank
order. About half the bytes at k = 8, world 4 (3.6 distinct owners per token instead of 8 rows), at
the price of one bf16 rounding per partial (the TP tolerance applies instead of bit-exactness).

Two dispatch modes:
  exact  (default) variable splits: only real pairs move. torch.distributed.all_to_all_single takes
         its split sizes as host lists, so the per-rank counts (exchanged on device with one small
         all_to_all) are copied to the host once per forward: ONE host sync, not graph-capturable.
  padded each (source, owner) pair of ranks gets a fixed slot of `capacity` rows (capacity >= the
         source's T * k (T with dedup), all of its rows on one owner); empty slots carry expert
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
from .sharding import _check_owner, ep_owner, shard_ep

MODES = ("exact", "padded")


@dataclass
class EPLayer:
    """One rank's part of an expert-parallel MoE layer (router replicated, experts partitioned)."""
    cfg: object                   # MoEConfig of the whole layer (experts = global count)
    gate: torch.Tensor            # [E, H] bf16, replicated
    bias: torch.Tensor            # [E] fp32, replicated
    weights: NVFP4MoEWeights      # this rank's experts, increasing global id
    owner: torch.Tensor           # int32 [E]: rank of each global expert
    expert_map: torch.Tensor      # int32 [E]: local index on this rank, -1 elsewhere
    world: int                    # ranks of the EP group (owner values are < world)

    @classmethod
    def from_layer(cls, layer, rank: int, world: int, owner: Optional[torch.Tensor] = None) -> "EPLayer":
        """owner: int32 [E] placement (default ep_owner: balanced contiguous blocks). Checked here,
        once (values in [0, world)), so the forward can index with it without a device-side check."""
        owner = ep_owner(layer.cfg.experts, world, layer.gate.device) if owner is None else owner
        _check_owner(owner, world)
        local, emap = shard_ep(layer.weights, owner, rank)
        dev = layer.gate.device
        return cls(layer.cfg, layer.gate, layer.bias, local, owner.to(dev), emap.to(dev), world)


def _alloc(shape, dtype, device) -> torch.Tensor:
    """Receive buffers; every element is written by the collective. Tests replace this function
    with a NaN/0xFF-filling one to prove no unwritten byte reaches the output."""
    return torch.empty(shape, dtype=dtype, device=device)


def _as_bf16_cols(t: torch.Tensor) -> torch.Tensor:
    """[n, c] int32/fp32 -> [n, 2c] bf16, the same bytes (reinterpreted, never converted)."""
    return t.contiguous().view(torch.bfloat16)


def _from_bf16_cols(t: torch.Tensor, dtype) -> torch.Tensor:
    return t.contiguous().view(dtype)


def _check(ep: EPLayer, x: torch.Tensor, mode: str, world: int) -> None:
    H = ep.cfg.hidden
    if world != ep.world:
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: the process group has {world} ranks but the "
                         f"EPLayer was sharded for world = {ep.world}")
    if x.dtype != torch.bfloat16 or x.dim() != 2 or x.shape[1] != H:
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: x must be bfloat16 [T, {H}]; "
                         f"got {str(x.dtype).replace('torch.', '')} {list(x.shape)}")
    if mode not in MODES:
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: mode must be one of {MODES}; got {mode!r}")
    if ep.owner.shape != (ep.cfg.experts,):
        raise ValueError(f"k2kernels.parallel.ep_moe_forward: owner must be int32 [{ep.cfg.experts}]; "
                         f"got {list(ep.owner.shape)}")


def _units(dest, ids, topk_w, world: int, dedup: bool):
    """The rows to dispatch ("units"), sorted by owner rank.

    dedup=False: one unit per (token, slot) pair p = t*k + j, in p order within an owner; carries
      that pair's expert id (weight applied on the source).
    dedup=True: one unit per (token, owner rank) that has at least one of the token's slots,
      in token order within an owner; carries all k ids (-1 where the slot's expert is elsewhere)
      and the k top-k weights (the owner combines its slots).
    Returns (unit_dest [U], unit_tok [U], unit_ids [U, kk] int32, unit_w [U, kk] fp32 or None,
    valid [U] bool or None, counts [world] int64, pair [U] (the pair p of each unit) or None).
    With dedup, U = T * world and the valid units come first (sentinel key sort), so no
    data-dependent shape (nonzero would sync on CUDA)."""
    T, k = ids.shape
    dev = ids.device
    if not dedup:
        d = dest.reshape(-1)
        order = torch.sort(d, stable=True).indices
        # scatter_add, not bincount: CUDA bincount reads max(input) on the host (a sync)
        counts = torch.zeros(world, dtype=torch.int64, device=dev).scatter_add_(0, d, torch.ones_like(d))
        return d[order], order // k, ids.reshape(-1)[order].reshape(-1, 1), None, None, counts, order
    mask = torch.zeros(T, world, dtype=torch.bool, device=dev).scatter_(1, dest, True)
    d_idx = torch.arange(world, device=dev).expand(T, world)
    t_idx = torch.arange(T, device=dev).unsqueeze(1).expand(T, world)
    key = torch.where(mask, d_idx * T + t_idx, torch.full_like(d_idx, world * T)).reshape(-1)
    order = torch.sort(key, stable=True).indices
    ud, tok, valid = d_idx.reshape(-1)[order], t_idx.reshape(-1)[order], mask.reshape(-1)[order]
    uid = torch.where(dest[tok] == ud.unsqueeze(1), ids[tok], torch.full_like(ids[tok], -1))
    return ud, tok, uid, topk_w[tok], valid, mask.sum(0), None


def ep_moe_forward(ep: EPLayer, x: torch.Tensor, group: Optional[dist.ProcessGroup] = None,
                   mode: str = "exact", capacity: Optional[int] = None, dedup: bool = False,
                   stats: Optional[dict] = None) -> torch.Tensor:
    """x [T, H] bf16 (this rank's tokens; T may differ between ranks, may be 0) -> [T, H] bf16.

    dedup=False (default): one row per (token, slot) pair; bit-exact vs moe_forward on CPU.
    dedup=True: one row per (token, owner rank) (DeepEP-style): fewer bytes (about 2x at k = 8,
      world 4), each owner returns its slots' weighted sum rounded to bf16 (TP-like rounding).
    mode='padded' needs `capacity`: rows per source->owner slot, the same on every rank, at least
      this rank's T * top_k (dedup=False) or T (dedup=True): all of a rank's rows may go to one
      owner. The default (that minimum) is only valid when every rank has the same T.
    If `stats` is a dict, 'dispatch_rows' / 'dispatch_bytes' (rows this rank sent, counting its own,
    and those rows' bytes out and back) are added: the benchmark's bytes-per-token figure."""
    world = dist.get_world_size(group)
    _check(ep, x, mode, world)
    T, H = x.shape
    k = ep.cfg.top_k
    dev = x.device
    topk_w, ids = route(ep, x)
    dest = ep.owner[ids.long()].long()                           # [T, k] owner rank of each pair
    ud, tok, uid, uw, valid, counts, pair = _units(dest, ids, topk_w, world, dedup)
    kk = uid.shape[1]
    cols = [x[tok], _as_bf16_cols(uid.to(torch.int32))] + ([_as_bf16_cols(uw.float())] if dedup else [])
    payload = torch.cat(cols, dim=1)
    C = payload.shape[1]

    if mode == "exact":
        recv_counts = _alloc((world,), counts.dtype, dev)
        dist.all_to_all_single(recv_counts, counts, group=group)
        send_splits, recv_splits = counts.tolist(), recv_counts.tolist()     # the one host sync
        n = sum(send_splits)
        recv = _alloc((sum(recv_splits), C), torch.bfloat16, dev)
        dist.all_to_all_single(recv, payload[:n], recv_splits, send_splits, group=group)
        y = _experts(ep, recv, H, kk, dedup)
        back = _alloc((n, H), torch.bfloat16, dev)
        dist.all_to_all_single(back, y, send_splits, recv_splits, group=group)
        ud, tok = ud[:n], tok[:n]
        valid = None                                               # the first n units are the valid ones
        sent_rows = n
    else:
        need = T * k if not dedup else T
        cap = need if capacity is None else int(capacity)
        if cap < need:
            what = "T" if dedup else "T * top_k"
            raise ValueError(f"k2kernels.parallel.ep_moe_forward: capacity must be >= {what} = {need} "
                             f"(all of a rank's rows may go to one owner); got {cap}")
        U = ud.shape[0]
        starts = torch.cumsum(counts, 0) - counts
        slot = ud * cap + (torch.arange(U, device=dev) - starts[ud])       # row in [world * cap]
        if valid is not None:
            slot = torch.where(valid, slot, torch.full_like(slot, world * cap))   # invalid -> spare row
        send = torch.zeros(world * cap + 1, C, dtype=torch.bfloat16, device=dev)
        send[:, H:H + 2 * kk] = _as_bf16_cols(torch.full((1, kk), -1, dtype=torch.int32, device=dev))  # empty: id -1
        send[slot] = payload
        recv = _alloc((world * cap, C), torch.bfloat16, dev)
        dist.all_to_all_single(recv, send[:world * cap], group=group)
        y = _experts(ep, recv, H, kk, dedup)                       # empty slots come back as 0 rows
        back_all = _alloc((world * cap, H), torch.bfloat16, dev)
        dist.all_to_all_single(back_all, y, group=group)
        back = back_all[slot.clamp_max(world * cap - 1)]           # invalid units: read, never used
        sent_rows = world * cap
    if stats is not None:
        stats["dispatch_rows"] = stats.get("dispatch_rows", 0) + sent_rows
        stats["dispatch_bytes"] = stats.get("dispatch_bytes", 0) + sent_rows * (C + H) * 2
    if not dedup:
        # back is in unit order = pairs sorted by owner; put it back in pair order and combine
        # exactly as moe_forward does (fp32, slots j = 0..k-1 in order)
        y_pairs = torch.empty_like(back)
        y_pairs[pair] = back
        out = (y_pairs.float().reshape(T, k, H) * topk_w.unsqueeze(-1)).sum(1)
        return out.to(torch.bfloat16)
    # dedup: one bf16 partial per (token, owner); sum the owners in rank order (deterministic)
    idx = tok * world + ud
    if valid is not None:
        idx = torch.where(valid, idx, torch.full_like(idx, T * world))
    parts = torch.zeros(T * world + 1, H, dtype=torch.bfloat16, device=dev)
    parts[idx] = back
    return parts[:T * world].reshape(T, world, H).float().sum(1).to(torch.bfloat16)


def _experts(ep: EPLayer, recv: torch.Tensor, H: int, kk: int, dedup: bool) -> torch.Tensor:
    """Received rows -> this rank's contribution. Without dedup: k = 1 and weight 1 (the source
    applies the top-k weight, as moe_forward does, so the rounding matches the single-process
    layer). With dedup: the row's k slots with their weights, foreign slots (id -1) skipped."""
    rx = recv[:, :H].contiguous()
    rid = _from_bf16_cols(recv[:, H:H + 2 * kk], torch.int32)
    if dedup:
        rw = _from_bf16_cols(recv[:, H + 2 * kk:H + 4 * kk], torch.float32)
    else:
        rw = torch.ones(recv.shape[0], kk, dtype=torch.float32, device=recv.device)
    return local_experts(ep.weights, rx, rw, rid, ep.expert_map)
