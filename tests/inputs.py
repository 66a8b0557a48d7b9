"""Small random inputs for every op (shared by the opcheck, compile and error tests)."""
from __future__ import annotations

import torch

from k2kernels import nvfp4


def moe_gemm_args(device="cpu", E=3, N=32, K=64, rows=(2, 0, 3), act="bf16"):
    M = sum(rows)
    a = torch.randn(M, K, device=device).to(torch.bfloat16)
    w_packed, w_scale, w_alpha = nvfp4.quantize_weight(torch.randn(E, N, K, device=device))
    offsets = torch.tensor([0] + list(torch.tensor(rows).cumsum(0).tolist()), dtype=torch.int32, device=device)
    a_scale = torch.tensor(0.02, device=device) if act == "nvfp4" else None
    return (a, w_packed, w_scale, w_alpha.float(), offsets, act, a_scale, "linear")


def topk_router_args(device="cpu", T=5, E=16, k=4, scoring="sigmoid", bias=True, n_group=1, topk_group=1):
    logits = torch.randn(T, E, device=device)
    b = torch.randn(E, device=device) * 0.1 if bias else None
    return (logits, b, k, scoring, n_group, topk_group, True, 2.5)


def moe_align_args(device="cpu", T=6, k=3, E=8, block=4):
    ids = torch.stack([torch.randperm(E, device=device)[:k] for _ in range(T)]).to(torch.int32)
    return (ids, E, block, None)


def quantize_nvfp4_args(device="cpu", M=4, K=64):
    return (torch.randn(M, K, device=device).to(torch.bfloat16), torch.tensor(0.01, device=device))


def kv_cache_append_args(device="cpu", T=5, H=2, D=16, pages=4, page_size=4, latent=False):
    k = torch.randn(T, H, D, device=device).to(torch.bfloat16)
    k_cache = torch.zeros(pages, page_size, H, D, device=device).to(torch.float8_e4m3fn)
    slots = torch.randperm(pages * page_size, device=device)[:T].to(torch.int64)
    slots[1] = -1
    k_scale = torch.tensor(0.05, device=device)
    if latent:
        return (k, None, k_cache, None, slots, k_scale, None)
    v = torch.randn(T, H, D, device=device).to(torch.bfloat16)
    v_cache = torch.zeros_like(k_cache)
    return (k, v, k_cache, v_cache, slots, k_scale, torch.full((H,), 0.04, device=device))


def fp8_kv_attention_args(device="cpu", seq=(5, 9), q_lens=(1, 3), Hq=4, Hkv=2, D=None, page_size=4, latent=False,
                          window_left=-1):
    """Head dims the CUDA kernel has (64, or the MLA latent 576 / 512 with one KV head), so the same
    arguments serve the CPU reference and the CUDA kernel."""
    if latent:
        Hkv, D = 1, D or 576
    D = D or 64
    B = len(seq)
    max_pages = max((s + page_size - 1) // page_size for s in seq)
    pages = B * max_pages
    k_cache = (torch.randn(pages, page_size, Hkv, D, device=device) * 2).to(torch.float8_e4m3fn)
    v_cache = None if latent else (torch.randn(pages, page_size, Hkv, D, device=device) * 2).to(torch.float8_e4m3fn)
    block_table = torch.randperm(pages, device=device).to(torch.int32).reshape(B, max_pages)
    seq_lens = torch.tensor(seq, dtype=torch.int32, device=device)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    q = torch.randn(int(cu[-1]), Hq, D, device=device).to(torch.bfloat16)
    k_scale = torch.tensor(0.1, device=device)
    v_scale = None if latent else torch.full((Hkv,), 0.2, device=device)
    return (q, k_cache, v_cache, block_table, seq_lens, cu, k_scale, v_scale, D ** -0.5, True, -1,
            512 if latent else -1, window_left)


def quantize_nvfp4_experts_args(device="cpu", rows=(3, 0, 130), K=64, gather=True):
    M = sum(rows)
    x = torch.randn(M + 5, K, device=device).to(torch.bfloat16)
    offsets = torch.tensor([0] + torch.tensor(rows).cumsum(0).tolist(), dtype=torch.int32, device=device)
    gs = torch.rand(len(rows), device=device) * 0.01 + 0.005
    idx = torch.randperm(M + 5, device=device)[:M].to(torch.int32) if gather else None
    return (x, gs, offsets, idx)


ALL = {
    "moe_gemm": moe_gemm_args,
    "topk_router": topk_router_args,
    "moe_align": moe_align_args,
    "quantize_nvfp4": quantize_nvfp4_args,
    "kv_cache_append": kv_cache_append_args,
    "fp8_kv_attention": fp8_kv_attention_args,
    "fp8_kv_attention_lse": fp8_kv_attention_args,
    "quantize_nvfp4_experts": quantize_nvfp4_experts_args,
}

from fused_moe_inputs import FUSED_MOE_ARGS  # noqa: E402  (issue 7: the fused_moe family's ops)
ALL.update(FUSED_MOE_ARGS)
