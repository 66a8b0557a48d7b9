"""k2kernels: GPU kernels for Kimi-K2-class MoE models (NVFP4 experts, FP8-KV attention).

Importing the package defines torch.ops.k2kernels.* (schemas in csrc/torch_bindings.cpp), with the
PyTorch references on CPU and CUDA kernels built on first CUDA use (see k2kernels/_registry.py).
Every op has a wrapper with keyword defaults in k2kernels.ops, re-exported here except `fused_moe`:
`k2kernels.fused_moe` is the module with `KimiMoE` (its wrapper is `k2kernels.ops.fused_moe`, also
importable as `from k2kernels.fused_moe import fused_moe`).
"""
from . import _registry
from ._registry import load_kernels
from . import nvfp4, ops
from .ops import (fp8_kv_attention, kv_cache_append, moe_align, moe_combine, moe_gather, moe_gemm,
                  moe_gemm_w4a4_sm120, moe_silu_mul, quantize_nvfp4, quantize_nvfp4_experts, topk_router)

__all__ = ["load_kernels", "nvfp4", "ops", "moe_gemm", "topk_router", "moe_align", "quantize_nvfp4",
           "kv_cache_append", "fp8_kv_attention", "quantize_nvfp4_experts", "moe_gemm_w4a4_sm120",
           "moe_gather", "moe_silu_mul", "moe_combine"]
__version__ = "0.1.0"
