"""The NVFP4 format (ModelOpt / vLLM convention, docs in ../docs/nvfp4.md).

An NVFP4 tensor is E2M1 codes packed two per byte along K (element 2i in the LOW nibble), one
float8_e4m3fn block scale per 16 consecutive K elements, and one fp32 global scale:
    value = e2m1(code) * f32(block_scale) * global_scale
This module is plain PyTorch and is the single definition of the rounding rules: the CUDA
quantization kernel (csrc/quant/) reproduces these exact fp32 operations bit for bit.
"""
from __future__ import annotations

import torch

BLOCK = 16            # elements per block scale
E2M1_MAX = 6.0
E4M3_MAX = 448.0
# E2M1 code -> value; bit 3 is the sign.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# Round-to-nearest-even boundaries between magnitudes 0,.5,1,1.5,2,3,4,6: a value exactly on a
# boundary goes to the even code, so ">" boundaries round ties down and ">=" ones round ties up.
_E2M1_GT = (0.25, 1.25, 2.5, 5.0)     # ties go down (to codes 0, 2, 4, 6)
_E2M1_GE = (0.75, 1.75, 3.5)          # ties go up (to codes 2, 4, 6)


def round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> E2M1 codes (uint8 0..15), round to nearest even, saturating at +-6; NaN -> 0."""
    a = x.abs()
    mag = torch.zeros_like(x, dtype=torch.uint8)
    for t in _E2M1_GT:
        mag += (a > t).to(torch.uint8)
    for t in _E2M1_GE:
        mag += (a >= t).to(torch.uint8)
    sign = (torch.signbit(x) & ~torch.isnan(x)).to(torch.uint8) << 3
    return mag | sign


def e2m1_to_float(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8, one per element) -> fp32 values."""
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    return table[codes.long()]


def e4m3_satfinite(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> float8_e4m3fn, round to nearest even, saturating to +-448 (like cvt.rn.satfinite).

    torch's own cast turns out-of-range values into NaN instead, so clamp first; NaN stays NaN."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def pack_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """[..., K] codes -> [..., K/2] uint8, element 2i in the low nibble."""
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_e2m1: last dim must be even; got {tuple(codes.shape)}")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """[..., K/2] uint8 -> [..., K] codes."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_e2m1: packed must be uint8; got {packed.dtype}")
    lo, hi = packed & 0xF, packed >> 4
    return torch.stack((lo, hi), dim=-1).flatten(-2)


def quantize_blocks(x: torch.Tensor, global_scale: torch.Tensor):
    """Quantize x [..., K] (K % 16 == 0) with a given fp32 global scale (scalar tensor, or one per
    leading row/expert broadcastable to x[..., :1]).

    block_scale = e4m3_satfinite(amax / (6 * gs)); code = round_e2m1(x / (f32(block_scale) * gs)).
    A block with a zero scale gets codes 0. A block holding NaN or +-inf gets a NaN scale (0x7F) and
    codes 0, so the non-finite value propagates through dequantization instead of being clipped.
    Returns (packed uint8 [..., K/2], block scales float8_e4m3fn [..., K/16])."""
    K = x.shape[-1]
    if K % BLOCK:
        raise ValueError(f"quantize: last dim must be a multiple of {BLOCK}; got {K}")
    xf = x.float().reshape(*x.shape[:-1], K // BLOCK, BLOCK)
    gs = global_scale.float()
    gs_b = gs.reshape(gs.shape + (1,) * (xf.dim() - gs.dim())) if gs.dim() else gs
    amax = xf.abs().amax(dim=-1, keepdim=True)
    finite = torch.isfinite(xf).all(dim=-1, keepdim=True)
    scale_f = amax / (gs_b * 6.0)
    scale_f = torch.where(finite, scale_f, torch.full_like(scale_f, float("nan")))
    scale = e4m3_satfinite(scale_f)
    denom = scale.float() * gs_b
    codes = round_to_e2m1(xf / denom)
    codes = torch.where((scale.float() == 0) | ~finite, torch.zeros_like(codes), codes)
    packed = pack_e2m1(codes.reshape(x.shape))
    return packed, scale.squeeze(-1)


def weight_global_scale(w: torch.Tensor) -> torch.Tensor:
    """ModelOpt weight_scale_2 = amax(W) / (6 * 448), per leading expert if w is [E, N, K]."""
    amax = w.float().abs().amax(dim=(-2, -1)) if w.dim() == 3 else w.float().abs().amax()
    return amax / (E2M1_MAX * E4M3_MAX)


def quantize_weight(w: torch.Tensor):
    """ModelOpt rule for weights [N, K] or [E, N, K]: returns (packed, block_scale, weight_scale_2)."""
    ws2 = weight_global_scale(w)
    packed, scale = quantize_blocks(w, ws2)
    return packed, scale, ws2


def dequantize(packed: torch.Tensor, block_scale: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """NVFP4 -> fp32: e2m1 * f32(block_scale) * global_scale (scalar, or per leading dim)."""
    vals = e2m1_to_float(unpack_e2m1(packed))
    K = vals.shape[-1]
    vals = vals.reshape(*vals.shape[:-1], K // BLOCK, BLOCK) * block_scale.float().unsqueeze(-1)
    gs = global_scale.float()
    if gs.dim():
        gs = gs.reshape(gs.shape + (1,) * (vals.dim() - gs.dim()))
    return (vals * gs).reshape(*vals.shape[:-2], K)


# ---- 128x4 block-scale swizzle (CUTLASS Sm1xxBlkScaledConfig layout, contract.md) ----------------

def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def swizzled_scale_shape(rows: int, k_blocks: int) -> tuple[int, int]:
    """Padded [rows, K/16] shape of a swizzled scale matrix: rows to 128, K/16 to 4."""
    return _round_up(rows, 128), _round_up(k_blocks, 4)


def swizzle_scales(scale: torch.Tensor) -> torch.Tensor:
    """Linear [..., R, K/16] e4m3 -> 128x4-swizzled [..., R_pad, K16_pad] (same dtype; pads with 0).

    Within each 128-row x 4-column tile the byte at (r, c) moves to offset
    (r % 32) * 16 + (r // 32) * 4 + c, tiles are laid out row-major over (R/128, K16/4)."""
    *lead, R, KB = scale.shape
    Rp, KBp = swizzled_scale_shape(R, KB)
    raw = scale.view(torch.uint8)
    padded = torch.zeros(*lead, Rp, KBp, dtype=torch.uint8, device=scale.device)
    padded[..., :R, :KB] = raw
    t = padded.reshape(*lead, Rp // 128, 4, 32, KBp // 4, 4)
    n = len(lead)
    perm = list(range(n)) + [n + 0, n + 3, n + 2, n + 1, n + 4]
    out = t.permute(*perm).contiguous().reshape(*lead, Rp, KBp)
    return out.view(scale.dtype)


def unswizzle_scales(swizzled: torch.Tensor, rows: int, k_blocks: int) -> torch.Tensor:
    """Inverse of swizzle_scales, cropping to [..., rows, k_blocks]."""
    *lead, Rp, KBp = swizzled.shape
    if (Rp, KBp) != swizzled_scale_shape(rows, k_blocks):
        raise ValueError(f"unswizzle_scales: swizzled shape {(Rp, KBp)} does not match rows={rows}, "
                         f"k_blocks={k_blocks} (expected {swizzled_scale_shape(rows, k_blocks)})")
    raw = swizzled.view(torch.uint8)
    n = len(lead)
    t = raw.reshape(*lead, Rp // 128, KBp // 4, 32, 4, 4)
    perm = list(range(n)) + [n + 0, n + 3, n + 2, n + 1, n + 4]
    out = t.permute(*perm).reshape(*lead, Rp, KBp)[..., :rows, :k_blocks].contiguous()
    return out.view(swizzled.dtype)
