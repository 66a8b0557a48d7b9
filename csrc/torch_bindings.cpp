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
  // scale_layout = "linear" ([E, N, K/16]) or "swizzled" (128x4 tiles, [E, pad128(N), pad4(K/16)]),
  // or "tiled" (w AND w_scale from k2kernels.moe_gemm_prepare.prepare_moe_gemm_weights, shapes as linear).
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
  // Paged FP8-KV attention (GQA/MQA; v_cache=None means V = first D_v channels of K), bottom-right causal;
  // window_left = w >= 0 (causal only): query position p sees keys max(0, p - w) .. p (FlashAttention window (w, 0)).
  m.def("fp8_kv_attention(Tensor q, Tensor k_cache, Tensor? v_cache, Tensor block_table, Tensor seq_lens, Tensor cu_seqlens_q, Tensor k_scale, Tensor? v_scale, float softmax_scale, bool causal=True, int max_q_len=-1, int head_dim_v=-1, int window_left=-1) -> Tensor");
  // The same, also returning the natural-log log-sum-exp of the scaled scores, fp32 [Tq, H_q] (for merging partial attentions).
  m.def("fp8_kv_attention_lse(Tensor q, Tensor k_cache, Tensor? v_cache, Tensor block_table, Tensor seq_lens, Tensor cu_seqlens_q, Tensor k_scale, Tensor? v_scale, float softmax_scale, bool causal=True, int max_q_len=-1, int head_dim_v=-1, int window_left=-1) -> (Tensor, Tensor)");
  // Fused MoE layer (docs/fused_moe.md): router -> align -> gather -> gate_up GEMM -> SiLU*up -> down GEMM -> top-k combine (+ shared_out); workspace from fused_moe.workspace_bytes.
  m.def("fused_moe(Tensor x, Tensor router_logits, Tensor? e_bias, Tensor w13, Tensor w13_scale, Tensor w13_alpha, Tensor w2, Tensor w2_scale, Tensor w2_alpha, int top_k, str scoring=\"sigmoid\", int n_group=1, int topk_group=1, bool renormalize=True, float routed_scaling_factor=1.0, Tensor? expert_map=None, Tensor? shared_out=None, str act=\"bf16\", Tensor? a13_scale=None, Tensor? a2_scale=None, str scale_layout=\"linear\", Tensor(a!)? workspace=None) -> Tensor");
  // fused_moe stage: a[r] = x[sorted_pairs[r] // top_k] (a pair outside [0, T*k) gives a zero row).
  m.def("moe_gather(Tensor x, Tensor sorted_pairs, int top_k) -> Tensor");
  // fused_moe stage: [M, 2I] = [gate | up] bf16 -> bf16(silu(gate) * up) [M, I], fp32 math.
  m.def("moe_silu_mul(Tensor gate_up) -> Tensor");
  // fused_moe stage: out[t] = sum_j w[t,j] * y[inverse[t*k+j]] (+ shared[t]), fp32 in slot order (deterministic); inverse -1 skips.
  m.def("moe_combine(Tensor y, Tensor inverse, Tensor topk_weights, Tensor? shared=None) -> Tensor");
}
