// Every k2kernels op schema, one per m.def line (Python reads these same lines at import to define
// the ops when no compiled library is loaded, so keep each schema on ONE line inside the m.def call).
// Kernel families register their CUDA implementations beside their kernels (csrc/<family>/*_ops.cpp)
// with TORCH_LIBRARY_IMPL, so a schema exists even where a kernel was not built.
// This file is compiled only into the CMake library for C++ users; the Python package defines the
// same schemas from this text and loads one library per kernel family (k2kernels/_build.py).
#include <torch/library.h>

TORCH_LIBRARY(k2kernels, m) {
  // NVFP4 grouped GEMM over contiguous expert row segments: out[r] = a[r] @ W_e^T (contract.md).
  // act = "bf16" (W4A16) or "nvfp4" (W4A4; a is quantized with a_scale per 16-element block);
  // scale_layout = "linear" ([E, N, K/16]) or "swizzled" (128x4 tiles, [E, pad128(N), pad4(K/16)]).
  m.def("moe_gemm(Tensor a, Tensor w, Tensor w_scale, Tensor w_alpha, Tensor expert_offsets, str act=\"bf16\", Tensor? a_scale=None, str scale_layout=\"linear\") -> Tensor");
  // Fused top-k router: softmax or sigmoid scoring, optional selection bias, grouped top-k.
  m.def("topk_router(Tensor logits, Tensor? bias, int top_k, str scoring=\"sigmoid\", int n_group=1, int topk_group=1, bool renormalize=True, float routed_scaling_factor=1.0) -> (Tensor, Tensor)");
  // Expert alignment: (offsets [E+1], pairs sorted by expert [T*k], inverse [T*k], padded offsets [E+1]).
  m.def("moe_align(Tensor ids, int num_experts, int block_size=1, Tensor? expert_map=None) -> (Tensor, Tensor, Tensor, Tensor)");
  // BF16 rows -> NVFP4 (packed e2m1 [M, K/2] uint8, e4m3 block scales [M, K/16]); x ~ q * scale * global_scale.
  m.def("quantize_nvfp4(Tensor x, Tensor global_scale) -> (Tensor, Tensor)");
  // Scatter BF16 K/V rows into a paged FP8 E4M3 cache: store = saturate(x / scale); slot -1 skips.
  m.def("kv_cache_append(Tensor k, Tensor? v, Tensor(a!) k_cache, Tensor(b!)? v_cache, Tensor slot_mapping, Tensor k_scale, Tensor? v_scale) -> ()");
  // Per-expert NVFP4 activation quantization for SM1xx block-scaled grouped GEMMs: -> (packed [M, K/2], 128x4-swizzled scales with each expert at a 128-row-aligned block, sf_offsets [E+1]); row_idx gathers rows.
  m.def("quantize_nvfp4_experts(Tensor x, Tensor global_scale, Tensor expert_offsets, Tensor? row_idx=None) -> (Tensor, Tensor, Tensor)");
  // SM120 native W4A4 MoE GEMM (CUTLASS block-scaled grouped GEMM); equals moe_gemm(act="nvfp4", scale_layout="swizzled").
  m.def("moe_gemm_w4a4_sm120(Tensor a, Tensor w, Tensor w_scale, Tensor w_alpha, Tensor expert_offsets, Tensor a_scale, str config=\"auto\") -> Tensor");
  // Paged FP8-KV attention (GQA/MQA; v_cache=None means V = first D_v channels of K), bottom-right causal.
  m.def("fp8_kv_attention(Tensor q, Tensor k_cache, Tensor? v_cache, Tensor block_table, Tensor seq_lens, Tensor cu_seqlens_q, Tensor k_scale, Tensor? v_scale, float softmax_scale, bool causal=True, int max_q_len=-1, int head_dim_v=-1) -> Tensor");
}
