"""Plain-PyTorch references of every op: the CPU implementation, the fallback where no kernel was
built, and the oracle every CUDA kernel is tested against (on the same quantized operands)."""
from .quant import quantize_nvfp4
from .moe_gemm import moe_gemm
from .router import topk_router
from .align import moe_align
from .kv_cache import kv_cache_append
from .attention import fp8_kv_attention, fp8_kv_attention_lse
from .fused_moe import fused_moe, moe_combine, moe_gather, moe_silu_mul
from .sm120 import moe_gemm_w4a4_sm120, quantize_nvfp4_experts

__all__ = ["quantize_nvfp4", "moe_gemm", "topk_router", "moe_align", "kv_cache_append", "fp8_kv_attention", "fp8_kv_attention_lse",
           "quantize_nvfp4_experts", "moe_gemm_w4a4_sm120", "fused_moe", "moe_gather", "moe_silu_mul", "moe_combine"]
