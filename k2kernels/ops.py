"""Python entry points: thin wrappers over torch.ops.k2kernels.* with the defaults spelled out.

One wrapper per schema in csrc/torch_bindings.cpp (same name, same argument order except where a
keyword default reads better, e.g. topk_router's `bias`). Engines may call torch.ops.k2kernels.<op>
directly; these wrappers add keyword defaults, turn Python-float scales into device tensors (scales
are tensors so CUDA graphs and torch.compile never bake in a changing constant) and, for moe_gemm and
fused_moe on CUDA, apply the tuned kernel knobs for the shape (k2kernels.autotune.dispatch_knobs:
in-memory -> $K2K_TUNED_CONFIGS -> bundled k2kernels/tuned/*.json; none -> the launcher's heuristic)."""
from __future__ import annotations

from typing import Optional

import contextlib

import torch

_ops = torch.ops.k2kernels


def _tuned(t: torch.Tensor, dims: dict):
    """Context that sets the tuned knobs of `dims` on t's GPU for the call (none on CPU, none while
    torch.compile traces: compiled code and CUDA-graph captures take knobs from autotune.knobs)."""
    if not t.is_cuda or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    from . import autotune          # here, not at import: `python -m k2kernels.autotune` runs that module
    knobs = autotune.dispatch_knobs("moe_gemm", dims, t.device.index if t.device.index is not None
                                    else torch.cuda.current_device())
    return autotune.knobs({"knobs": knobs}) if knobs else contextlib.nullcontext()


def _as_scale(x, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.tensor(float(x), dtype=torch.float32, device=device)


def moe_gemm(a: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, w_alpha: torch.Tensor,
             expert_offsets: torch.Tensor, act: str = "bf16", a_scale=None,
             scale_layout: str = "linear") -> torch.Tensor:
    """out[r] = a[r] @ W_e^T for rows r of expert e (contract.md); returns bf16 [M, N]."""
    if a_scale is not None:
        a_scale = _as_scale(a_scale, a.device)
    with _tuned(a, dict(M=a.shape[0], N=w.shape[1], K=a.shape[1], E=w.shape[0], act=act)):
        return _ops.moe_gemm(a, w, w_scale, w_alpha, expert_offsets, act, a_scale, scale_layout)


def topk_router(logits: torch.Tensor, top_k: int, bias: Optional[torch.Tensor] = None, scoring: str = "sigmoid",
                n_group: int = 1, topk_group: int = 1, renormalize: bool = True,
                routed_scaling_factor: float = 1.0):
    """-> (weights [T, k] fp32, ids [T, k] int32)."""
    return _ops.topk_router(logits, bias, top_k, scoring, n_group, topk_group, renormalize,
                            float(routed_scaling_factor))


def moe_align(ids: torch.Tensor, num_experts: int, block_size: int = 1, expert_map: Optional[torch.Tensor] = None):
    """-> (expert_offsets [E+1], sorted_pairs [T*k], inverse [T*k], padded_offsets [E+1]), all int32."""
    return _ops.moe_align(ids, num_experts, block_size, expert_map)


def quantize_nvfp4(x: torch.Tensor, global_scale):
    """bf16 [M, K] -> (packed e2m1 uint8 [M, K/2], e4m3 block scales [M, K/16])."""
    return _ops.quantize_nvfp4(x, _as_scale(global_scale, x.device))


def quantize_nvfp4_experts(x: torch.Tensor, global_scale, expert_offsets: torch.Tensor,
                           row_idx: Optional[torch.Tensor] = None):
    """Per-expert NVFP4 activation quantization for the SM12x block-scaled GEMM (docs/sm120.md):
    bf16 [M, K] (rows gathered by row_idx if given) -> (packed uint8 [M, K/2], e4m3 scales 128x4-swizzled
    with each expert in its own 128-row-aligned block, sf_offsets [E+1] int32). global_scale: [] or [E]."""
    return _ops.quantize_nvfp4_experts(x, _as_scale(global_scale, x.device), expert_offsets, row_idx)


def moe_gemm_w4a4_sm120(a: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, w_alpha: torch.Tensor,
                        expert_offsets: torch.Tensor, a_scale, config: str = "auto") -> torch.Tensor:
    """SM120 native W4A4 grouped GEMM (CUTLASS); same result as
    moe_gemm(..., act="nvfp4", a_scale=a_scale, scale_layout="swizzled") (docs/sm120.md)."""
    return _ops.moe_gemm_w4a4_sm120(a, w, w_scale, w_alpha, expert_offsets, _as_scale(a_scale, a.device), config)


def moe_gather(x: torch.Tensor, sorted_pairs: torch.Tensor, top_k: int) -> torch.Tensor:
    """fused_moe stage: a[r] = x[sorted_pairs[r] // top_k] (a pair outside [0, T*k) gives a zero row)."""
    return _ops.moe_gather(x, sorted_pairs, top_k)


def moe_silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """fused_moe stage: bf16 [M, 2I] = [gate | up] -> bf16(silu(gate) * up) [M, I], fp32 math."""
    return _ops.moe_silu_mul(gate_up)


def moe_combine(y: torch.Tensor, inverse: torch.Tensor, topk_weights: torch.Tensor,
                shared: Optional[torch.Tensor] = None) -> torch.Tensor:
    """fused_moe stage: out[t] = sum_j topk_weights[t, j] * y[inverse[t*k + j]] (+ shared[t]), fp32 in
    slot order; inverse -1 skips."""
    return _ops.moe_combine(y, inverse, topk_weights, shared)


def kv_cache_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale=None) -> None:
    """Scatter bf16 K/V [T, H_kv, D] into the paged FP8 cache in place: store = saturate(x / scale);
    slot_mapping int64 [T], slot -1 skips. v = v_cache = None for an MLA latent (K-only) cache."""
    _ops.kv_cache_append(k, v, k_cache, v_cache, slot_mapping, _as_scale(k_scale, k.device),
                         None if v_scale is None else _as_scale(v_scale, k.device))


def fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale=None,
                     softmax_scale: Optional[float] = None, causal: bool = True, max_q_len: int = -1,
                     head_dim_v: int = -1, return_lse: bool = False, window_left: int = -1):
    """Paged FP8-KV attention -> bf16 [Tq, H_q, D_v] (docs/attention.md); with return_lse=True ->
    (out, lse fp32 [Tq, H_q]), lse = natural-log log-sum-exp of the scaled scores (for merging partial
    attentions, e.g. a prefix and a suffix computed apart). softmax_scale defaults to D_qk ** -0.5;
    with an MLA-absorbed latent cache (D_qk 576) pass the model's own scale (based on its qk head dim,
    192 for Kimi-K2, times any YaRN mscale), not the default. window_left = w >= 0 (causal only) is a
    sliding window, FlashAttention's window_size=(w, 0): the query at position p sees keys
    max(0, p - w) .. p, w + 1 keys; -1 = none. (Last, after return_lse, so positional callers keep working.)"""
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    op = _ops.fp8_kv_attention_lse if return_lse else _ops.fp8_kv_attention
    return op(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, _as_scale(k_scale, q.device),
              None if v_scale is None else _as_scale(v_scale, q.device), float(softmax_scale), causal, max_q_len,
              head_dim_v, window_left)


def fused_moe(x: torch.Tensor, router_logits: torch.Tensor, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha,
              top_k: int, e_bias: Optional[torch.Tensor] = None, scoring: str = "sigmoid", n_group: int = 1,
              topk_group: int = 1, renormalize: bool = True, routed_scaling_factor: float = 1.0,
              expert_map: Optional[torch.Tensor] = None, shared_out: Optional[torch.Tensor] = None,
              act: str = "bf16", a13_scale=None, a2_scale=None, scale_layout: str = "linear",
              workspace: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Whole MoE layer: x [T, H] bf16, router_logits [T, E_global] -> [T, H] bf16 (docs/fused_moe.md).
    workspace: optional caller-owned uint8 buffer of k2kernels.fused_moe.workspace_bytes(max_tokens, H, I, top_k)."""
    if a13_scale is not None:
        a13_scale = _as_scale(a13_scale, x.device)
    if a2_scale is not None:
        a2_scale = _as_scale(a2_scale, x.device)
    # the tuned moe_gemm knobs of the gate_up GEMM (the autotuner timed the layer with those)
    gate_up = dict(M=x.shape[0] * top_k, N=w13.shape[1], K=x.shape[1], E=w13.shape[0], act=act)
    with _tuned(x, gate_up):
        return _ops.fused_moe(x, router_logits, e_bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha, top_k,
                              scoring, n_group, topk_group, renormalize, float(routed_scaling_factor), expert_map,
                              shared_out, act, a13_scale, a2_scale, scale_layout, workspace)
