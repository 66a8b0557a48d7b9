"""One-time weight preparation for the moe_gemm CUDA kernel (run at model load, never per call).
The tiled layout belongs to this version of the package (it changed in two sessions of 2026-11-29):
prepare from the checkpoint's linear weights at load instead of saving prepared tensors.

`prepare_moe_gemm_weights` permutes NVFP4 expert weights [E, N, K/2] and their e4m3 block scales into
the "tiled" layout the streaming kernels read fastest: every (expert, 64-row tile, 512-K step) block
is contiguous, i.e. 64 rows x 256 bytes = 16 KB of codes and 64 rows x 32 bytes = 2 KB of scales.
One pipeline stage of the kernel is then one sequential 16 KB read (one bulk copy in the decode
kernel, csrc/moe_gemm/moe_gemm_bulk.cuh) instead of 64 pieces of 256 B spread over 64 rows. Inside a
tile, the 16-byte chunks of each odd row are swapped pairwise (chunk c at c ^ 1), so that the bulk-copied
tile is read from shared memory without bank conflicts. Inside each 32-bit word (8 codes, K elements
8w .. 8w + 7), the codes are stored in the order K 0, 2, 4, 6, 1, 3, 5, 7 (`NIBBLE_ORDER`): the kernels'
dequantization pairs stored nibbles i and i + 4 into one bf16x2 register, which then holds the K pair
(2i, 2i + 1) that the activations already have side by side (no byte permutes in the inner loop).
Shapes and dtypes stay [E, N, K/2] uint8 and [E, N, K/16] float8_e4m3fn; pass scale_layout="tiled" to
moe_gemm. Needs N % 64 == 0, K % 512 == 0.
"""
from __future__ import annotations

import torch

from . import nvfp4

TILE_N = 64          # weight rows per tile (rows per CTA of the kernel)
TILE_K = 512         # K elements per tile (one pipeline step)
NIBBLE_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)   # stored nibble i of a word (from the low bits) = K element NIBBLE_ORDER[i]


def _check(E, N, K, op="prepare_moe_gemm_weights"):
    if N % TILE_N or K % TILE_K:
        raise ValueError(f"k2kernels.{op}: the tiled layout needs N % {TILE_N} == 0 and K % {TILE_K} == 0; "
                         f"got N={N}, K={K} (use scale_layout='linear' for other shapes)")


def _swap_odd_row_chunks(t: torch.Tensor) -> torch.Tensor:
    """[..., 64 rows, 256 bytes] -> the same with each odd row's 16-byte chunks swapped pairwise (c <-> c ^ 1).
    Its own inverse."""
    s = t.reshape(*t.shape[:-2], TILE_N // 2, 2, TILE_K // 64, 2, 16)
    return torch.stack([s[..., 0, :, :, :], s[..., 1, :, :, :].flip(-2)], dim=-4).reshape(t.shape)


# NIBBLE_ORDER as two delta swaps on 32-bit words (nibbles 1 <-> 2 and 5 <-> 6, then the byte pairs
# 1 <-> 2): (shift, mask of the lower positions). In place, with one temporary the size of ONE expert's
# codes, so preparing Kimi-size weights on a GPU needs no full-size copies beyond the tiled output.
_PAIR_STEPS = ((4, 0x00F000F0), (8, 0x0000FF00))


def _delta_swaps_(w: torch.Tensor, steps) -> torch.Tensor:
    assert w.is_contiguous(), "in place: a reshape of a non-contiguous tensor would copy and lose the swaps"
    for x in w.view(torch.int32).reshape(w.shape[0], -1):      # per expert
        for d, m in steps:
            t = x >> d
            t ^= x
            t &= m
            x ^= t
            t <<= d
            x ^= t
    return w


def _pair_nibbles_(w: torch.Tensor) -> torch.Tensor:
    """In place, contiguous [E, ..., K/2] uint8: each 32-bit word's codes from K order to NIBBLE_ORDER."""
    return _delta_swaps_(w, _PAIR_STEPS)


def _unpair_nibbles_(w: torch.Tensor) -> torch.Tensor:
    return _delta_swaps_(w, _PAIR_STEPS[::-1])


def tile_codes(w: torch.Tensor) -> torch.Tensor:
    """[E, N, K/2] uint8 (row-major) -> the same shape in tiled order."""
    E, N, K2 = w.shape
    _check(E, N, 2 * K2)
    t = w.reshape(E, N // TILE_N, TILE_N, K2 // (TILE_K // 2), TILE_K // 2)
    return _pair_nibbles_(_swap_odd_row_chunks(t.permute(0, 1, 3, 2, 4)).contiguous().reshape(E, N, K2))


def untile_codes(w: torch.Tensor) -> torch.Tensor:
    E, N, K2 = w.shape
    _check(E, N, 2 * K2, "untile")
    t = _swap_odd_row_chunks(w.reshape(E, N // TILE_N, K2 // (TILE_K // 2), TILE_N, TILE_K // 2))
    return _unpair_nibbles_(t.permute(0, 1, 3, 2, 4).contiguous().reshape(E, N, K2))   # t is a new tensor (stack)


def tile_scales(s: torch.Tensor) -> torch.Tensor:
    """[E, N, K/16] e4m3 linear -> the same shape in tiled order."""
    E, N, KB = s.shape
    _check(E, N, KB * nvfp4.BLOCK)
    kb = TILE_K // nvfp4.BLOCK
    t = s.view(torch.uint8).reshape(E, N // TILE_N, TILE_N, KB // kb, kb)
    return t.permute(0, 1, 3, 2, 4).contiguous().reshape(E, N, KB).view(s.dtype)


def untile_scales(s: torch.Tensor) -> torch.Tensor:
    E, N, KB = s.shape
    _check(E, N, KB * nvfp4.BLOCK, "untile")
    kb = TILE_K // nvfp4.BLOCK
    t = s.view(torch.uint8).reshape(E, N // TILE_N, KB // kb, TILE_N, kb)
    return t.permute(0, 1, 3, 2, 4).contiguous().reshape(E, N, KB).view(s.dtype)


def prepare_moe_gemm_weights(w: torch.Tensor, w_scale: torch.Tensor, scale_layout: str = "linear"):
    """(w [E, N, K/2] uint8, w_scale linear [E, N, K/16] or swizzled) -> (w, w_scale) in the tiled
    layout; call moe_gemm(..., scale_layout="tiled") with them. Run once at load time."""
    if w.dtype != torch.uint8 or w.dim() != 3:
        raise ValueError(f"k2kernels.prepare_moe_gemm_weights: w must be uint8 [E, N, K/2]; got {w.dtype} {list(w.shape)}")
    E, N, K2 = w.shape
    if scale_layout == "swizzled":
        w_scale = nvfp4.unswizzle_scales(w_scale, N, 2 * K2 // nvfp4.BLOCK)
    elif scale_layout != "linear":
        raise ValueError(f"k2kernels.prepare_moe_gemm_weights: scale_layout must be 'linear' or 'swizzled'; got {scale_layout!r}")
    if w_scale.dtype != torch.float8_e4m3fn or tuple(w_scale.shape) != (E, N, 2 * K2 // nvfp4.BLOCK):
        raise ValueError(f"k2kernels.prepare_moe_gemm_weights: w_scale must be float8_e4m3fn {[E, N, 2 * K2 // 16]}; "
                         f"got {w_scale.dtype} {list(w_scale.shape)}")
    return tile_codes(w.contiguous()), tile_scales(w_scale.contiguous())
