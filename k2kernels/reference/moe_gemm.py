"""Reference of moe_gemm: NVFP4 weights x BF16 (W4A16) or NVFP4 (W4A4) activations, grouped by
contiguous expert row segments. Dequantizes the exact quantized operands and multiplies in fp32."""
from __future__ import annotations

import torch

from .. import nvfp4
from .._checks import check_same_device, check_scale, check_tensor, fail

OP = "moe_gemm"
ACTS = ("bf16", "nvfp4")
SCALE_LAYOUTS = ("linear", "swizzled", "tiled")   # tiled: w AND w_scale from moe_gemm_prepare


def w_scale_shape(E: int, N: int, K: int, scale_layout: str) -> tuple[int, int, int]:
    if scale_layout in ("linear", "tiled"):
        return (E, N, K // nvfp4.BLOCK)
    return (E, *nvfp4.swizzled_scale_shape(N, K // nvfp4.BLOCK))


def check_moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act, a_scale, scale_layout) -> None:
    # a: contiguous, or one row expanded to all M rows (row stride 0; fused_moe passes that at T = 1)
    check_tensor(OP, "a", a, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [M, K]", contiguous=False)
    if not a.is_contiguous() and not (a.stride(0) == 0 and a.stride(1) == 1):
        fail(OP, f"a must be contiguous, or one row expanded to M rows (strides (0, 1)); got strides "
                 f"{list(a.stride())} for shape {list(a.shape)}")
    check_tensor(OP, "w", w, dtypes=(torch.uint8,), dim=3, expected="uint8 [E, N, K/2] (packed e2m1)")
    M, K = a.shape
    E, N, K2 = w.shape
    if K % 16 or K2 * 2 != K:
        fail(OP, f"w must be uint8 [E, N, K/2] with K = a.shape[1] = {K} (a multiple of 16); got w {list(w.shape)}")
    if scale_layout not in SCALE_LAYOUTS:
        fail(OP, f"scale_layout must be one of {SCALE_LAYOUTS}; got {scale_layout!r}")
    if scale_layout == "tiled" and (N % 64 or K % 512):
        fail(OP, f"scale_layout='tiled' needs N % 64 == 0 and K % 512 == 0; got N={N}, K={K}")
    want = w_scale_shape(E, N, K, scale_layout)
    check_tensor(OP, "w_scale", w_scale, dtypes=(torch.float8_e4m3fn,), dim=3,
                 expected=f"float8_e4m3fn {list(want)} ({scale_layout})")
    if tuple(w_scale.shape) != want:
        fail(OP, f"w_scale must be float8_e4m3fn {list(want)} ({scale_layout}); got {list(w_scale.shape)}")
    check_tensor(OP, "w_alpha", w_alpha, dtypes=(torch.float32,), dim=1, expected=f"float32 [{E}]")
    if w_alpha.shape[0] != E:
        fail(OP, f"w_alpha must be float32 [{E}] (one global scale per expert); got {list(w_alpha.shape)}")
    check_tensor(OP, "expert_offsets", expert_offsets, dtypes=(torch.int32,), dim=1,
                 expected=f"int32 [{E + 1}]")
    if expert_offsets.shape[0] != E + 1:
        fail(OP, f"expert_offsets must be int32 [{E + 1}] (E + 1 for E = {E}); got {list(expert_offsets.shape)}")
    if act not in ACTS:
        fail(OP, f"act must be one of {ACTS}; got {act!r}")
    if act == "nvfp4":
        check_scale(OP, "a_scale", a_scale, count=E)
    elif a_scale is not None:
        fail(OP, "a_scale is only used with act='nvfp4'; pass None for act='bf16'")
    check_same_device(OP, a=a, w=w, w_scale=w_scale, w_alpha=w_alpha, expert_offsets=expert_offsets, a_scale=a_scale)


def moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act="bf16", a_scale=None, scale_layout="linear"):
    check_moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act, a_scale, scale_layout)
    M, K = a.shape
    E, N, _ = w.shape
    offsets = expert_offsets.tolist()          # the reference may sync; kernels never do
    if offsets[0] != 0 or any(x > y for x, y in zip(offsets, offsets[1:])) or offsets[-1] > M:
        fail(OP, f"expert_offsets must start at 0, be non-decreasing and end <= M = {M}")
    if scale_layout == "swizzled":
        w_scale = nvfp4.unswizzle_scales(w_scale, N, K // nvfp4.BLOCK)
    elif scale_layout == "tiled":
        from ..moe_gemm_prepare import untile_codes, untile_scales
        w, w_scale = untile_codes(w), untile_scales(w_scale)
    out = torch.zeros(M, N, dtype=torch.float32, device=a.device)
    for e in range(E):
        r0, r1 = offsets[e], offsets[e + 1]
        if r0 == r1:
            continue
        w_e = nvfp4.dequantize(w[e], w_scale[e], w_alpha[e])          # [N, K] fp32
        rows = a[r0:r1]
        if act == "nvfp4":
            s = a_scale.reshape(-1)[e if a_scale.numel() > 1 else 0]
            q, bs = nvfp4.quantize_blocks(rows, s)
            x = nvfp4.dequantize(q, bs, s)
        else:
            x = rows.float()
        out[r0:r1] = x @ w_e.t()
    return out.to(torch.bfloat16)
