"""Fake (meta) implementations: output shapes and dtypes only, after the same checks the
references run, so torch.compile and opcheck see the errors a real call would raise."""
from __future__ import annotations

import torch

from .reference.align import check_moe_align
from .reference.attention import check_fp8_kv_attention, head_dim_v_of
from .reference.kv_cache import check_kv_cache_append
from .reference.moe_gemm import check_moe_gemm
from .reference.quant import check_quantize_nvfp4
from .reference.router import check_topk_router


def moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act="bf16", a_scale=None, scale_layout="linear"):
    check_moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act, a_scale, scale_layout)
    return a.new_empty((a.shape[0], w.shape[1]), dtype=torch.bfloat16)


def topk_router(logits, bias, top_k, scoring="sigmoid", n_group=1, topk_group=1, renormalize=True,
                routed_scaling_factor=1.0):
    check_topk_router(logits, bias, top_k, scoring, n_group, topk_group)
    T = logits.shape[0]
    return (logits.new_empty((T, top_k), dtype=torch.float32), logits.new_empty((T, top_k), dtype=torch.int32))


def moe_align(ids, num_experts, block_size=1, expert_map=None):
    check_moe_align(ids, num_experts, block_size, expert_map)
    n = ids.shape[0] * ids.shape[1]
    i32 = torch.int32
    return (ids.new_empty((num_experts + 1,), dtype=i32), ids.new_empty((n,), dtype=i32),
            ids.new_empty((n,), dtype=i32), ids.new_empty((num_experts + 1,), dtype=i32))


def quantize_nvfp4(x, global_scale):
    check_quantize_nvfp4(x, global_scale)
    M, K = x.shape
    return (x.new_empty((M, K // 2), dtype=torch.uint8), x.new_empty((M, K // 16), dtype=torch.float8_e4m3fn))


def kv_cache_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale):
    check_kv_cache_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)


def fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                     softmax_scale, causal=True, max_q_len=-1, head_dim_v=-1, window_left=-1):
    check_fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale, head_dim_v,
                           causal, window_left)
    Dv = head_dim_v_of(q, v_cache, head_dim_v)
    return q.new_empty((q.shape[0], q.shape[1], Dv), dtype=torch.bfloat16)


def fp8_kv_attention_lse(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                         softmax_scale, causal=True, max_q_len=-1, head_dim_v=-1, window_left=-1):
    out = fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                           softmax_scale, causal, max_q_len, head_dim_v, window_left)
    return out, q.new_empty((q.shape[0], q.shape[1]), dtype=torch.float32)


def quantize_nvfp4_experts(x, global_scale, expert_offsets, row_idx=None):
    from .reference.sm120 import check_quantize_nvfp4_experts, expert_sf_rows
    check_quantize_nvfp4_experts(x, global_scale, expert_offsets, row_idx)
    M = x.shape[0] if row_idx is None else row_idx.shape[0]
    K, E = x.shape[1], expert_offsets.shape[0] - 1
    return (x.new_empty((M, K // 2), dtype=torch.uint8),
            x.new_empty((expert_sf_rows(M, E), (K // 16 + 3) // 4 * 4), dtype=torch.float8_e4m3fn),
            x.new_empty((E + 1,), dtype=torch.int32))


def moe_gemm_w4a4_sm120(a, w, w_scale, w_alpha, expert_offsets, a_scale, config="auto"):
    from .reference.sm120 import check_moe_gemm_w4a4_sm120
    check_moe_gemm_w4a4_sm120(a, w, w_scale, w_alpha, expert_offsets, a_scale, config)
    check_moe_gemm(a, w, w_scale, w_alpha, expert_offsets, "nvfp4", a_scale, "swizzled")
    return a.new_empty((a.shape[0], w.shape[1]), dtype=torch.bfloat16)


def moe_gather(x, sorted_pairs, top_k):
    from .reference.fused_moe import check_moe_gather
    check_moe_gather(x, sorted_pairs, top_k)
    return x.new_empty((sorted_pairs.shape[0], x.shape[1]))


def moe_silu_mul(gate_up):
    from .reference.fused_moe import check_moe_silu_mul
    check_moe_silu_mul(gate_up)
    return gate_up.new_empty((gate_up.shape[0], gate_up.shape[1] // 2))


def moe_combine(y, inverse, topk_weights, shared=None):
    from .reference.fused_moe import check_moe_combine
    check_moe_combine(y, inverse, topk_weights, shared)
    return y.new_empty((topk_weights.shape[0], y.shape[1]))


def fused_moe(x, router_logits, e_bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha, top_k,
              scoring="sigmoid", n_group=1, topk_group=1, renormalize=True, routed_scaling_factor=1.0,
              expert_map=None, shared_out=None, act="bf16", a13_scale=None, a2_scale=None,
              scale_layout="linear", workspace=None):
    from .reference.fused_moe import check_fused_moe
    check_fused_moe(x, router_logits, e_bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha, top_k,
                    scoring, n_group, topk_group, expert_map, shared_out, act, a13_scale, a2_scale,
                    scale_layout, workspace)
    return x.new_empty(x.shape)
