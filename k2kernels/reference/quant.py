"""Reference of quantize_nvfp4 (activations): per-16 block scales under a given global scale."""
from __future__ import annotations

import torch

from .. import nvfp4
from .._checks import check_scale, check_same_device, check_tensor, fail

OP = "quantize_nvfp4"


def check_quantize_nvfp4(x: torch.Tensor, global_scale: torch.Tensor) -> None:
    check_tensor(OP, "x", x, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [M, K]")
    if x.shape[1] % nvfp4.BLOCK:
        fail(OP, f"x must have K % 16 == 0 (one e4m3 scale per 16 elements); got K={x.shape[1]}")
    check_scale(OP, "global_scale", global_scale)
    check_same_device(OP, x=x, global_scale=global_scale)


def quantize_nvfp4(x: torch.Tensor, global_scale: torch.Tensor):
    """x [M, K] bf16 -> (packed uint8 [M, K/2], scales float8_e4m3fn [M, K/16]), x ~ q * s * gs."""
    check_quantize_nvfp4(x, global_scale)
    return nvfp4.quantize_blocks(x, global_scale.reshape(()))
