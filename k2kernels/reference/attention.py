"""Reference of fp8_kv_attention: paged FP8 K/V, GQA/MQA, bottom-right causal, optional sliding window
(FlashAttention's window_size=(window_left, 0)), fp32 softmax."""
from __future__ import annotations

import torch

from .._checks import check_same_device, check_scale, check_tensor, fail

OP = "fp8_kv_attention"


def head_dim_v_of(q, v_cache, head_dim_v: int) -> int:
    if v_cache is not None:
        return v_cache.shape[3]
    return head_dim_v if head_dim_v > 0 else q.shape[2]


def check_window(causal, window_left) -> None:
    """window_left = -1: no window; w >= 0: query position p sees keys max(0, p - w) .. p (w + 1 keys).
    The window is defined for causal attention only (its right edge is the causal one)."""
    if isinstance(window_left, bool) or not isinstance(window_left, int) or window_left < -1:
        fail(OP, f"window_left must be an int >= -1 (-1 = no sliding window); got {window_left!r}")
    if window_left >= 0 and not causal:
        fail(OP, f"window_left = {window_left} needs causal=True (the sliding window is causal: keys "
                 f"p - window_left .. p); got causal=False")


def check_fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                           head_dim_v, causal=True, window_left=-1) -> None:
    check_tensor(OP, "q", q, dtypes=(torch.bfloat16,), dim=3, expected="bfloat16 [Tq, H_q, D_qk]")
    check_tensor(OP, "k_cache", k_cache, dtypes=(torch.float8_e4m3fn,), dim=4,
                 expected="float8_e4m3fn [pages, page_size, H_kv, D_qk]")
    Tq, Hq, D = q.shape
    Hkv = k_cache.shape[2]
    if k_cache.shape[3] != D:
        fail(OP, f"k_cache head dim must equal q's D_qk = {D}; got k_cache {list(k_cache.shape)}")
    if Hkv < 1 or Hq % Hkv:
        fail(OP, f"H_q = {Hq} must be a multiple of H_kv = {Hkv} (GQA)")
    if v_cache is not None:
        check_tensor(OP, "v_cache", v_cache, dtypes=(torch.float8_e4m3fn,), dim=4,
                     expected=f"float8_e4m3fn [{k_cache.shape[0]}, {k_cache.shape[1]}, {Hkv}, D_v]")
        if tuple(v_cache.shape[:3]) != tuple(k_cache.shape[:3]):
            fail(OP, f"v_cache must be [{k_cache.shape[0]}, {k_cache.shape[1]}, {Hkv}, D_v]; got {list(v_cache.shape)}")
        check_scale(OP, "v_scale", v_scale, count=Hkv)
    elif not 0 < head_dim_v <= D:
        fail(OP, f"with v_cache=None (latent cache), head_dim_v must be in (0, {D}]; got {head_dim_v}")
    check_tensor(OP, "block_table", block_table, dtypes=(torch.int32,), dim=2, expected="int32 [B, max_pages]")
    B = block_table.shape[0]
    check_tensor(OP, "seq_lens", seq_lens, dtypes=(torch.int32,), dim=1, expected=f"int32 [{B}]")
    check_tensor(OP, "cu_seqlens_q", cu_seqlens_q, dtypes=(torch.int32,), dim=1, expected=f"int32 [{B + 1}]")
    if seq_lens.shape[0] != B or cu_seqlens_q.shape[0] != B + 1:
        fail(OP, f"seq_lens must be int32 [{B}] and cu_seqlens_q int32 [{B + 1}] for block_table "
                 f"{list(block_table.shape)}; got {list(seq_lens.shape)} and {list(cu_seqlens_q.shape)}")
    check_scale(OP, "k_scale", k_scale, count=Hkv)
    check_same_device(OP, q=q, k_cache=k_cache, v_cache=v_cache, block_table=block_table, seq_lens=seq_lens,
                      cu_seqlens_q=cu_seqlens_q, k_scale=k_scale, v_scale=v_scale)
    check_window(causal, window_left)


def _per_head(scale: torch.Tensor, H: int) -> torch.Tensor:
    return scale.float().reshape(-1).expand(H) if scale.numel() == 1 else scale.float()


def fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                     softmax_scale, causal=True, max_q_len=-1, head_dim_v=-1, window_left=-1):
    return fp8_kv_attention_lse(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                                softmax_scale, causal, max_q_len, head_dim_v, window_left)[0]


def fp8_kv_attention_lse(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                         softmax_scale, causal=True, max_q_len=-1, head_dim_v=-1, window_left=-1):
    """-> (out bf16 [Tq, H_q, D_v], lse fp32 [Tq, H_q]): lse = logsumexp over the keys of the scaled
    scores softmax_scale * q . (k * k_scale), natural log (what engines merge partial attentions with),
    over the row's visible keys. Query i of a sequence (position p = seq_len - q_len + i) sees keys
    j <= p when causal, and with window_left = w >= 0 only max(0, p - w) <= j <= p (w + 1 keys)."""
    check_fp8_kv_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale, head_dim_v,
                           causal, window_left)
    Tq, Hq, D = q.shape
    _, page_size, Hkv, _ = k_cache.shape
    Dv = head_dim_v_of(q, v_cache, head_dim_v)
    group = Hq // Hkv
    ks = _per_head(k_scale, Hkv)
    vs = _per_head(v_scale, Hkv) if v_cache is not None else ks
    out = torch.zeros(Tq, Hq, Dv, dtype=torch.float32, device=q.device)
    lse = torch.full((Tq, Hq), float("-inf"), dtype=torch.float32, device=q.device)
    cu, lens = cu_seqlens_q.tolist(), seq_lens.tolist()
    if cu[0] != 0 or cu[-1] != Tq or any(a > b for a, b in zip(cu, cu[1:])):
        fail(OP, f"cu_seqlens_q must start at 0, be non-decreasing and end at Tq = {Tq}; got {cu}")
    for b, L in enumerate(lens):
        q0, q1 = cu[b], cu[b + 1]
        n_q = q1 - q0
        if n_q == 0:
            continue
        if L < n_q or L > block_table.shape[1] * page_size:
            fail(OP, f"seq_lens[{b}] = {L} must be >= its q_len {n_q} and <= max_pages * page_size")
        n_pages = (L + page_size - 1) // page_size
        pages = block_table[b, :n_pages].long()
        k = k_cache[pages].reshape(-1, Hkv, D)[:L].float() * ks.reshape(1, Hkv, 1)
        v = (v_cache[pages].reshape(-1, Hkv, Dv)[:L].float() if v_cache is not None
             else k_cache[pages].reshape(-1, Hkv, D)[:L, :, :Dv].float()) * vs.reshape(1, Hkv, 1)
        k = k.repeat_interleave(group, dim=1)                  # [L, Hq, D]
        v = v.repeat_interleave(group, dim=1)
        qb = q[q0:q1].float()                                  # [n_q, Hq, D]
        s = torch.einsum("qhd,khd->hqk", qb, k) * softmax_scale
        if causal:
            pos = L - n_q + torch.arange(n_q, device=q.device).reshape(-1, 1)   # each query's key position
            kj = torch.arange(L, device=q.device).reshape(1, -1)
            hidden = kj > pos
            if window_left >= 0:
                hidden |= kj < pos - window_left
            s = s.masked_fill(hidden, float("-inf"))
        p = torch.softmax(s, dim=-1)
        out[q0:q1] = torch.einsum("hqk,khd->qhd", p, v)
        lse[q0:q1] = torch.logsumexp(s, dim=-1).transpose(0, 1)
    return out.to(torch.bfloat16), lse
