"""References of the SM120 W4A4 path (docs/sm120.md):

- quantize_nvfp4_experts: per-expert NVFP4 activation quantization into CUTLASS's 128x4-swizzled
  scale layout, each expert's scales in its own 128-row-aligned block (optionally gathering rows).
- moe_gemm_w4a4_sm120: the SM120 CUTLASS grouped GEMM; by definition equal to
  moe_gemm(act="nvfp4", scale_layout="swizzled").
"""
from __future__ import annotations

import torch

from .. import nvfp4
from .._checks import check_same_device, check_scale, check_tensor, fail
from .moe_gemm import moe_gemm

QOP = "quantize_nvfp4_experts"
GOP = "moe_gemm_w4a4_sm120"
# Tile configs built in csrc/cutlass_sm120/ (w4a4_types.h: K2K_W4A4_FOR_EACH_CONFIG), plus "auto".
CONFIGS = ("auto", "t128x128", "t128x128_pingpong", "t256x128")


def expert_sf_rows(M: int, E: int) -> int:
    """Rows of the per-expert swizzled scale buffer: every non-empty expert is padded to 128 rows, so
    sum(round_up(M_e, 128)) <= M + 127 * min(E, M); rounded up to 128 (csrc/quant/quantize_nvfp4_experts.h)."""
    return (M + 127 * min(E, M) + 127) // 128 * 128


def check_quantize_nvfp4_experts(x, global_scale, expert_offsets, row_idx) -> None:
    check_tensor(QOP, "x", x, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [M, K]")
    if x.shape[1] % nvfp4.BLOCK:
        fail(QOP, f"x must have K % 16 == 0 (one e4m3 scale per 16 elements); got K={x.shape[1]}")
    check_tensor(QOP, "expert_offsets", expert_offsets, dtypes=(torch.int32,), dim=1, expected="int32 [E+1]")
    if expert_offsets.numel() < 1:
        fail(QOP, f"expert_offsets must be int32 [E+1]; got {list(expert_offsets.shape)}")
    check_scale(QOP, "global_scale", global_scale, count=expert_offsets.numel() - 1)
    if row_idx is not None:
        check_tensor(QOP, "row_idx", row_idx, dtypes=(torch.int32,), dim=1, expected="int32 [M]")
    check_same_device(QOP, x=x, global_scale=global_scale, expert_offsets=expert_offsets, row_idx=row_idx)


def _valid_offsets(op: str, offsets: list[int], M: int) -> None:
    if offsets[0] != 0 or any(a > b for a, b in zip(offsets, offsets[1:])) or offsets[-1] > M:
        fail(op, f"expert_offsets must start at 0, be non-decreasing and end <= M = {M}")


def quantize_nvfp4_experts(x, global_scale, expert_offsets, row_idx=None):
    """-> (packed uint8 [M, K/2], scales float8_e4m3fn [expert_sf_rows(M, E), pad4(K/16)] swizzled,
    sf_offsets int32 [E+1]).

    Row r of the output is x[row_idx[r]] (x[r] without row_idx); an index outside [0, x.shape[0])
    gives a zero row (codes 0, scale 0), as in the kernel. Rows [offsets[e], offsets[e+1]) are expert
    e's, quantized with global_scale[e] (or the single global scale) by nvfp4.quantize_blocks; their
    scales sit at rows sf_offsets[e] + i of the linear [sf_rows, pad4(K/16)] matrix, which is then
    128x4-swizzled (nvfp4.swizzle_scales). Rows after offsets[E] get codes 0; every scale byte that
    is not a block's scale is 0."""
    check_quantize_nvfp4_experts(x, global_scale, expert_offsets, row_idx)
    K = x.shape[1]
    E = expert_offsets.numel() - 1
    if row_idx is None:
        rows = x
    else:
        idx = row_idx.long()
        ok = (idx >= 0) & (idx < x.shape[0])
        rows = x.new_zeros(idx.shape[0], K)
        rows[ok] = x[idx[ok]]
    M = rows.shape[0]
    offsets = expert_offsets.tolist()            # the reference may sync; the kernel never does
    _valid_offsets(QOP, offsets, M)
    kb = K // nvfp4.BLOCK
    sf_rows = expert_sf_rows(M, E)
    padded = [(offsets[e + 1] - offsets[e] + 127) // 128 * 128 for e in range(E)]
    sf_offsets = [0]
    for p in padded:
        sf_offsets.append(sf_offsets[-1] + p)
    packed = torch.zeros(M, K // 2, dtype=torch.uint8, device=x.device)
    linear = torch.zeros(sf_rows, kb, dtype=torch.uint8, device=x.device)
    gs = global_scale.float().reshape(-1)
    for e in range(E):
        r0, r1 = offsets[e], offsets[e + 1]
        if r0 == r1:
            continue
        q, s = nvfp4.quantize_blocks(rows[r0:r1], gs[e if gs.numel() > 1 else 0])
        packed[r0:r1] = q
        linear[sf_offsets[e]:sf_offsets[e] + r1 - r0] = s.view(torch.uint8)
    swz = nvfp4.swizzle_scales(linear.view(torch.float8_e4m3fn))
    return packed, swz, torch.tensor(sf_offsets, dtype=torch.int32, device=x.device)


def check_moe_gemm_w4a4_sm120(a, w, w_scale, w_alpha, expert_offsets, a_scale, config) -> None:
    check_tensor(GOP, "a", a, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [M, K]")
    check_tensor(GOP, "w", w, dtypes=(torch.uint8,), dim=3, expected="uint8 [E, N, K/2] (packed e2m1)")
    K = a.shape[1]
    E, N, K2 = w.shape
    if K % 128 or K2 * 2 != K:
        fail(GOP, f"needs K % 128 == 0 (the SM120 kernel's K tile) and w [E, N, K/2] with K = a.shape[1]; "
                  f"got a {list(a.shape)}, w {list(w.shape)}")
    if N % 8:
        fail(GOP, f"needs N % 8 == 0 (16-byte aligned bf16 output rows); got N={N}")
    if config not in CONFIGS:
        fail(GOP, f"config must be one of {CONFIGS}; got {config!r}")
    want = (E, *nvfp4.swizzled_scale_shape(N, K // nvfp4.BLOCK))
    check_tensor(GOP, "w_scale", w_scale, dtypes=(torch.float8_e4m3fn,), dim=3,
                 expected=f"float8_e4m3fn {list(want)} (swizzled)")
    if tuple(w_scale.shape) != want:
        fail(GOP, f"w_scale must be float8_e4m3fn {list(want)} (128x4 swizzled, nvfp4.swizzle_scales); "
                  f"got {list(w_scale.shape)}")
    check_scale(GOP, "a_scale", a_scale, count=E)
    # The remaining checks (w_alpha, expert_offsets, devices) are moe_gemm's own.


def moe_gemm_w4a4_sm120(a, w, w_scale, w_alpha, expert_offsets, a_scale, config="auto"):
    """Equal to moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act="nvfp4", a_scale, "swizzled"):
    per-expert NVFP4 activations (a_scale[e]) x NVFP4 weights, fp32 accumulation, bf16 out."""
    check_moe_gemm_w4a4_sm120(a, w, w_scale, w_alpha, expert_offsets, a_scale, config)
    return moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act="nvfp4", a_scale=a_scale, scale_layout="swizzled")
