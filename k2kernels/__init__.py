"""k2kernels: GPU kernels for Kimi-K2-class MoE models (NVFP4 experts, FP8-KV attention).

Importing the package defines torch.ops.k2kernels.* (schemas in csrc/torch_bindings.cpp), with the
PyTorch references on CPU and CUDA kernels built on first CUDA use (see k2kernels/_registry.py).
"""
from . import _registry
from ._registry import load_kernels
from . import nvfp4
from .ops import (fp8_kv_attention, kv_cache_append, moe_align, moe_gemm, quantize_nvfp4,
                  topk_router)

__all__ = ["load_kernels", "nvfp4", "moe_gemm", "topk_router", "moe_align", "quantize_nvfp4",
           "kv_cache_append", "fp8_kv_attention"]
__version__ = "0.1.0"
