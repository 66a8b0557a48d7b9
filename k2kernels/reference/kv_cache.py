"""Reference of kv_cache_append: BF16 K/V rows -> paged FP8 E4M3 cache, store = saturate(x / scale)."""
from __future__ import annotations

import torch

from .. import nvfp4
from .._checks import check_same_device, check_scale, check_tensor, fail

OP = "kv_cache_append"


def check_kv_cache_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale) -> None:
    check_tensor(OP, "k", k, dtypes=(torch.bfloat16,), dim=3, expected="bfloat16 [T, H_kv, D]")
    check_tensor(OP, "k_cache", k_cache, dtypes=(torch.float8_e4m3fn,), dim=4,
                 expected="float8_e4m3fn [pages, page_size, H_kv, D]")
    T, H, D = k.shape
    if tuple(k_cache.shape[2:]) != (H, D):
        fail(OP, f"k_cache must be [pages, page_size, {H}, {D}] to match k {list(k.shape)}; got {list(k_cache.shape)}")
    check_tensor(OP, "slot_mapping", slot_mapping, dtypes=(torch.int64,), dim=1, expected=f"int64 [{T}]")
    if slot_mapping.shape[0] != T:
        fail(OP, f"slot_mapping must be int64 [{T}] (one slot per token of k); got {list(slot_mapping.shape)}")
    check_scale(OP, "k_scale", k_scale, count=H)
    if (v is None) != (v_cache is None):
        fail(OP, "v and v_cache must both be given or both be None (None = latent cache with V inside K)")
    if v is not None:
        check_tensor(OP, "v", v, dtypes=(torch.bfloat16,), dim=3, expected=f"bfloat16 [{T}, {H}, D_v]")
        if tuple(v.shape[:2]) != (T, H):
            fail(OP, f"v must be bfloat16 [{T}, {H}, D_v]; got {list(v.shape)}")
        check_tensor(OP, "v_cache", v_cache, dtypes=(torch.float8_e4m3fn,), dim=4,
                     expected=f"float8_e4m3fn [pages, page_size, {H}, {v.shape[2]}]")
        if tuple(v_cache.shape) != (*k_cache.shape[:3], v.shape[2]):
            fail(OP, f"v_cache must be [{k_cache.shape[0]}, {k_cache.shape[1]}, {H}, {v.shape[2]}]; got {list(v_cache.shape)}")
        check_scale(OP, "v_scale", v_scale, count=H)
    check_same_device(OP, k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping,
                      k_scale=k_scale, v_scale=v_scale)


def quantize_kv(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """[T, H, D] bf16 -> e4m3 with store = saturate(x / scale); scale [] / [1] / [H]."""
    s = scale.float().reshape(-1, 1) if scale.numel() > 1 else scale.float().reshape(())
    return nvfp4.e4m3_satfinite(x.float() / s)


def kv_cache_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale) -> None:
    check_kv_cache_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    page_size = k_cache.shape[1]
    n_slots = k_cache.shape[0] * page_size
    slots = slot_mapping.tolist()
    if any(s >= n_slots or s < -1 for s in slots):
        fail(OP, f"slot_mapping values must be -1 or in [0, {n_slots}); got range [{min(slots)}, {max(slots)}]")
    keep = [t for t, s in enumerate(slots) if s >= 0]
    if not keep:
        return
    idx = torch.tensor(keep, device=k.device)
    sl = slot_mapping[idx]
    page, off = sl // page_size, sl % page_size
    k_cache[page, off] = quantize_kv(k[idx], k_scale)
    if v is not None:
        v_cache[page, off] = quantize_kv(v[idx], v_scale)
