"""Shard prepared NVFP4 expert weights for tensor parallelism (TP) and expert parallelism (EP).

TP over the expert intermediate dim I (what vLLM/SGLang call TP for MoE):
  - gate_up  w13 [E, 2I, H/2], rows [gate; up]: rank r keeps output rows [gate_r; up_r], where
    gate_r = gate[r*I/W : (r+1)*I/W] and up_r likewise, so SiLU(gate_r) * up_r is computed locally.
  - down     w2  [E, H, I/2]: rank r keeps the input (K) columns of the same I slice; each rank's
    down GEMM yields a partial sum over its slice and an all-reduce completes it.
  - Block scales follow their elements: one e4m3 scale per 16 K elements, so the down K slice must
    be a multiple of 16 (one scale column). In the 128x4-swizzled layout (nvfp4.swizzle_scales) a
    row slice is a run of whole 128-row tiles and a K slice a run of whole 4-column (64-element)
    tiles when it starts on a tile edge and ends on one or at the end of the matrix; then the shard
    is cut out of the swizzled bytes directly. Otherwise the slice is unswizzled, cut and
    re-swizzled. Both give exactly swizzle_scales(<the linear shard>) (tests/test_parallel.py).
  - The moe_gemm "tiled" layout (k2kernels.moe_gemm_prepare: codes AND scales in contiguous
    64-row x 512-K blocks) is cut block-wise: gate_up needs I/W and I multiples of 64, down needs
    I/W a multiple of 512 (the kernel's own constraint: Kimi-K2 I = 2048 allows TP <= 4), else
    ValueError (shard the linear weights and prepare each shard instead). Equal to
    prepare_moe_gemm_weights(<the linear shard>) (tested).
  - Per-expert global scales (alpha, input_scale) are not touched: no element is re-quantized, so
    every shard holds bit-identical codes and scales to the unsharded weights.

EP: experts are partitioned across ranks; `owner[e]` is the rank holding global expert e and
`expert_map(owner, rank)[e]` its local index there (-1 = not on this rank), the convention of
`moe_align(..., expert_map=...)`. The default partition is contiguous and balanced (the first
E % W ranks get one extra expert, as vLLM does); any placement (e.g. from load statistics) works
because local experts are always taken in increasing global id.
"""
from __future__ import annotations

import dataclasses

import torch

from .. import nvfp4
from ..loaders import NVFP4MoEWeights
from ..moe_gemm_prepare import TILE_K, TILE_N

SCALE_LAYOUTS = ("linear", "swizzled", "tiled")
_TILE_ROWS, _TILE_COLS = 128, 4          # swizzled scale tile: 128 rows x 4 scale columns (512 B)


def _fail(msg: str):
    raise ValueError(f"k2kernels.parallel: {msg}")


def _check_layout(scale_layout: str) -> None:
    if scale_layout not in SCALE_LAYOUTS:
        _fail(f"scale_layout must be one of {SCALE_LAYOUTS}; got {scale_layout!r}")


def _check_rank(rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        _fail(f"rank must be in [0, world) with world >= 1; got rank={rank}, world={world}")


# ---- TP slice arithmetic -------------------------------------------------------------------------

def tp_slice(inter: int, rank: int, world: int) -> tuple[int, int]:
    """[i0, i1) of the intermediate dim held by `rank`: equal slices of a multiple of 16 elements
    (one block-scale column of the down projection per 16), else ValueError."""
    _check_rank(rank, world)
    if inter % (nvfp4.BLOCK * world):
        _fail(f"TP needs the expert intermediate size I divisible by 16 * world = {nvfp4.BLOCK * world} "
              f"(each rank's down-projection K slice must be whole 16-element scale blocks); "
              f"got I={inter}, world={world}")
    n = inter // world
    return rank * n, (rank + 1) * n


# ---- swizzled scale slicing ----------------------------------------------------------------------

def _tiles(s: torch.Tensor) -> torch.Tensor:
    """Swizzled [..., Rp, KBp] -> [..., Rp/128, KBp/4, 512] view: tiles are stored row-major, each
    tile's 512 bytes contiguous (nvfp4.swizzle_scales)."""
    *lead, Rp, KBp = s.shape
    return s.view(torch.uint8).reshape(*lead, Rp // _TILE_ROWS, KBp // _TILE_COLS, _TILE_ROWS * _TILE_COLS)


def _from_tiles(t: torch.Tensor, dtype) -> torch.Tensor:
    *lead, tr, tc, _ = t.shape
    return t.contiguous().reshape(*lead, tr * _TILE_ROWS, tc * _TILE_COLS).view(dtype)


def _tile_aligned(lo: int, hi: int, n: int, tile: int) -> bool:
    return lo % tile == 0 and (hi % tile == 0 or hi == n)


def _check_swizzled(s: torch.Tensor, rows: int, k_blocks: int, name: str) -> None:
    want = nvfp4.swizzled_scale_shape(rows, k_blocks)
    if s.dtype != torch.float8_e4m3fn or tuple(s.shape[-2:]) != want:
        _fail(f"{name} (swizzled) must be float8_e4m3fn [..., {want[0]}, {want[1]}] for {rows} rows x "
              f"{k_blocks} scale columns; got {str(s.dtype).replace('torch.', '')} {list(s.shape)}")


def swizzled_row_slice(s: torch.Tensor, rows: int, k_blocks: int, r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of a swizzled scale matrix of logical shape [..., rows, k_blocks], returned in
    the swizzled layout of a [..., r1 - r0, k_blocks] matrix. Whole 128-row tiles are cut directly;
    otherwise unswizzle -> slice -> swizzle."""
    _check_swizzled(s, rows, k_blocks, "scale")
    if not 0 <= r0 <= r1 <= rows:
        _fail(f"row slice [{r0}, {r1}) outside [0, {rows})")
    if _tile_aligned(r0, r1, rows, _TILE_ROWS):
        t = _tiles(s)[..., r0 // _TILE_ROWS: -(-r1 // _TILE_ROWS), :, :]
        return _from_tiles(t, s.dtype)
    lin = nvfp4.unswizzle_scales(s, rows, k_blocks)[..., r0:r1, :]
    return nvfp4.swizzle_scales(lin)


def swizzled_col_slice(s: torch.Tensor, rows: int, k_blocks: int, c0: int, c1: int) -> torch.Tensor:
    """Scale columns [c0, c1) (= K elements [16*c0, 16*c1)) of a swizzled scale matrix, in the
    swizzled layout of a [..., rows, c1 - c0] matrix. Whole 4-column tiles are cut directly."""
    _check_swizzled(s, rows, k_blocks, "scale")
    if not 0 <= c0 <= c1 <= k_blocks:
        _fail(f"scale column slice [{c0}, {c1}) outside [0, {k_blocks})")
    if _tile_aligned(c0, c1, k_blocks, _TILE_COLS):
        t = _tiles(s)[..., :, c0 // _TILE_COLS: -(-c1 // _TILE_COLS), :]
        return _from_tiles(t, s.dtype)
    lin = nvfp4.unswizzle_scales(s, rows, k_blocks)[..., :, c0:c1]
    return nvfp4.swizzle_scales(lin)


def _swizzled_row_cat(parts: list[torch.Tensor], part_rows: list[int], k_blocks: int) -> torch.Tensor:
    """Row-concatenate swizzled matrices. Tile rows can simply be stacked when every part but the
    last holds whole 128-row tiles (no padding inside); otherwise go through the linear layout."""
    if all(r % _TILE_ROWS == 0 for r in part_rows[:-1]):
        return _from_tiles(torch.cat([_tiles(p) for p in parts], dim=-3), parts[0].dtype)
    lin = [nvfp4.unswizzle_scales(p, r, k_blocks) for p, r in zip(parts, part_rows)]
    return nvfp4.swizzle_scales(torch.cat(lin, dim=-2))


# ---- the moe_gemm "tiled" layout (codes and scales) ------------------------------------------------

def _blocks(t: torch.Tensor, per_block: int) -> torch.Tensor:
    """Tiled [E, N, X] (X = K/2 codes or K/16 scales) -> [E, N/64, X/per_block, 64*per_block] view:
    each (64-row tile, 512-K step) block is contiguous, blocks row-major (moe_gemm_prepare.tile_*)."""
    E, N, X = t.shape
    return t.view(torch.uint8).reshape(E, N // TILE_N, X // per_block, TILE_N * per_block)


def _from_blocks(b: torch.Tensor, dtype, per_block: int) -> torch.Tensor:
    E, nt, kt, _ = b.shape
    return b.contiguous().reshape(E, nt * TILE_N, kt * per_block).view(dtype)


_CODE_BLOCK, _SCALE_BLOCK = TILE_K // 2, TILE_K // nvfp4.BLOCK      # bytes per block row: 256, 32


def _check_tiled(N: int, K: int, what: str) -> None:
    if N % TILE_N or K % TILE_K:
        _fail(f"the tiled layout needs N % {TILE_N} == 0 and K % {TILE_K} == 0 ({what}); got N={N}, K={K}")


# ---- TP shards of the two projections ------------------------------------------------------------

def _check_packed(w: torch.Tensor, name: str) -> tuple[int, int, int]:
    if w.dtype != torch.uint8 or w.dim() != 3:
        _fail(f"{name} must be uint8 [E, N, K/2] (packed e2m1); got "
              f"{str(w.dtype).replace('torch.', '')} {list(w.shape)}")
    E, N, K2 = w.shape
    return E, N, K2 * 2


def _check_linear_scale(s: torch.Tensor, E: int, N: int, K: int, name: str, layout: str = "linear") -> None:
    want = (E, N, K // nvfp4.BLOCK)
    if s.dtype != torch.float8_e4m3fn or tuple(s.shape) != want:
        _fail(f"{name} ({layout}) must be float8_e4m3fn {list(want)}; got "
              f"{str(s.dtype).replace('torch.', '')} {list(s.shape)}")


def shard_gate_up(w13: torch.Tensor, w13_scale: torch.Tensor, rank: int, world: int,
                  scale_layout: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """TP shard of gate_up: ([E, 2I/W, H/2] uint8 rows [gate_r; up_r], its scales in the same layout).
    scale_layout 'linear' / 'swizzled' describe the scales (codes row-major); 'tiled' means codes
    and scales both in moe_gemm's tiled layout."""
    _check_layout(scale_layout)
    E, N, K = _check_packed(w13, "w13")
    if N % 2:
        _fail(f"w13 rows must be [gate; up] (an even count 2I); got {N}")
    inter = N // 2
    i0, i1 = tp_slice(inter, rank, world)
    gate, up = slice(i0, i1), slice(inter + i0, inter + i1)
    w = torch.cat([w13[:, gate], w13[:, up]], dim=1).contiguous()
    if scale_layout == "tiled":
        n = i1 - i0
        if inter % TILE_N or n % TILE_N:
            _fail(f"a tiled gate_up shard needs I and I/world multiples of {TILE_N} (whole 64-row tiles); "
                  f"got I={inter}, world={world}: shard the linear weights and prepare each shard")
        _check_tiled(N, K, "w13")
        _check_linear_scale(w13_scale, E, N, K, "w13_scale", "tiled")      # same shape as linear
        rows = [slice(i0 // TILE_N, i1 // TILE_N), slice((inter + i0) // TILE_N, (inter + i1) // TILE_N)]
        cb, sb = _blocks(w13, _CODE_BLOCK), _blocks(w13_scale, _SCALE_BLOCK)
        w = _from_blocks(torch.cat([cb[:, r] for r in rows], 1), torch.uint8, _CODE_BLOCK)
        s = _from_blocks(torch.cat([sb[:, r] for r in rows], 1), w13_scale.dtype, _SCALE_BLOCK)
        return w, s
    if scale_layout == "linear":
        _check_linear_scale(w13_scale, E, N, K, "w13_scale")
        s = torch.cat([w13_scale[:, gate], w13_scale[:, up]], dim=1).contiguous()
    else:
        kb = K // nvfp4.BLOCK
        parts = [swizzled_row_slice(w13_scale, N, kb, i0, i1),
                 swizzled_row_slice(w13_scale, N, kb, inter + i0, inter + i1)]
        s = _swizzled_row_cat(parts, [i1 - i0, i1 - i0], kb)
    return w, s


def shard_down(w2: torch.Tensor, w2_scale: torch.Tensor, rank: int, world: int,
               scale_layout: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """TP shard of down: ([E, H, I/(2W)] uint8 = K columns [i0, i1), its scales in the same layout)."""
    _check_layout(scale_layout)
    E, N, K = _check_packed(w2, "w2")
    i0, i1 = tp_slice(K, rank, world)
    if scale_layout == "tiled":
        if (i1 - i0) % TILE_K:
            _fail(f"a tiled down shard needs I/world a multiple of {TILE_K} (the tiled kernel's K step); "
                  f"got I={K}, world={world}: use scale_layout='linear' for this TP degree")
        _check_tiled(N, K, "w2")
        _check_linear_scale(w2_scale, E, N, K, "w2_scale", "tiled")
        ks = slice(i0 // TILE_K, i1 // TILE_K)
        return (_from_blocks(_blocks(w2, _CODE_BLOCK)[:, :, ks], torch.uint8, _CODE_BLOCK),
                _from_blocks(_blocks(w2_scale, _SCALE_BLOCK)[:, :, ks], w2_scale.dtype, _SCALE_BLOCK))
    w = w2[:, :, i0 // 2: i1 // 2].contiguous()
    c0, c1 = i0 // nvfp4.BLOCK, i1 // nvfp4.BLOCK
    if scale_layout == "linear":
        _check_linear_scale(w2_scale, E, N, K, "w2_scale")
        s = w2_scale[:, :, c0:c1].contiguous()
    else:
        s = swizzled_col_slice(w2_scale, N, K // nvfp4.BLOCK, c0, c1)
    return w, s


def shard_tp(weights: NVFP4MoEWeights, rank: int, world: int) -> NVFP4MoEWeights:
    """TP shard of a layer's NVFP4MoEWeights (linear scales, what moe_forward takes). Global scales
    are copied unchanged (no element is re-quantized)."""
    weights.validate()
    w13, s13 = shard_gate_up(weights.w13, weights.w13_scale, rank, world)
    w2, s2 = shard_down(weights.w2, weights.w2_scale, rank, world)
    return NVFP4MoEWeights(w13, s13, weights.w13_alpha.clone(), weights.w13_input_scale.clone(),
                           w2, s2, weights.w2_alpha.clone(), weights.w2_input_scale.clone())


def shard_tp_layer(layer, rank: int, world: int):
    """A MoELayer (k2kernels.moe_layer) holding rank's TP shard; the router gate/bias are replicated."""
    cfg = dataclasses.replace(layer.cfg, inter=layer.cfg.inter // world)
    return type(layer)(cfg, layer.gate, layer.bias, shard_tp(layer.weights, rank, world))


# ---- EP ------------------------------------------------------------------------------------------

def ep_owner(num_experts: int, world: int, device="cpu") -> torch.Tensor:
    """Default placement: int32 [E], owner[e] = rank of expert e; contiguous balanced blocks (the
    first E % world ranks hold one extra expert)."""
    if world < 1 or num_experts < world:
        _fail(f"EP needs 1 <= world <= num_experts (every rank holds an expert); got "
              f"num_experts={num_experts}, world={world}")
    base, extra = divmod(num_experts, world)
    counts = torch.tensor([base + (r < extra) for r in range(world)])
    return torch.repeat_interleave(torch.arange(world, dtype=torch.int32), counts).to(device)


def _check_owner(owner: torch.Tensor, world: int | None = None) -> None:
    if not isinstance(owner, torch.Tensor) or owner.dtype != torch.int32 or owner.dim() != 1:
        _fail(f"owner must be int32 [E] (global expert -> rank); got "
              f"{owner.dtype if isinstance(owner, torch.Tensor) else type(owner).__name__}"
              f"{list(owner.shape) if isinstance(owner, torch.Tensor) else ''}")
    if owner.numel() and (int(owner.min()) < 0 or (world is not None and int(owner.max()) >= world)):
        _fail(f"owner values must be ranks in [0, {world}); got range "
              f"[{int(owner.min())}, {int(owner.max())}]")


def expert_map(owner: torch.Tensor, rank: int) -> torch.Tensor:
    """int32 [E]: local index of global expert e on `rank` (increasing global id), -1 elsewhere."""
    _check_owner(owner)
    mine = owner == rank
    local = torch.cumsum(mine.to(torch.int32), 0, dtype=torch.int32) - 1
    return torch.where(mine, local, torch.full_like(local, -1))


def shard_ep(weights: NVFP4MoEWeights, owner: torch.Tensor, rank: int) -> tuple[NVFP4MoEWeights, torch.Tensor]:
    """(this rank's experts, in increasing global id, as NVFP4MoEWeights; its expert_map).
    Works for any scale layout: experts are the leading dim of every tensor."""
    _check_owner(owner)
    if owner.shape[0] != weights.num_experts:
        _fail(f"owner must have one entry per expert ({weights.num_experts}); got {owner.shape[0]}")
    idx = torch.nonzero(owner.to(weights.w13.device) == rank).flatten()
    if idx.numel() == 0:
        _fail(f"rank {rank} owns no expert; every EP rank must hold at least one")
    local = NVFP4MoEWeights(**{k: v.index_select(0, idx).contiguous() for k, v in weights.__dict__.items()})
    return local, expert_map(owner, rank)
