"""References of the fused MoE layer and its three small kernels (csrc/fused_moe/).

  moe_gather(x, sorted_pairs, top_k)     a[r] = x[sorted_pairs[r] // top_k]  (rows in expert order)
  moe_silu_mul(gate_up)                  act = bf16(silu(f32 gate) * f32 up), gate_up = [gate | up]
  moe_combine(y, inverse, w, shared)     out[t] = bf16(sum_j w[t, j] * f32(y[inverse[t*k + j]]) + f32(shared[t]))
  fused_moe(...)                         router -> align -> gather -> gate_up GEMM -> silu*mul
                                         -> down GEMM -> combine (+ shared expert output)

Out-of-range values never raise here, because the CUDA kernels cannot raise on device values
without a host sync; both sides give the same defined result instead:
  - moe_gather: a pair outside [0, T*k) gives a zero row;
  - moe_combine: an inverse of -1 (pair not on this rank, EP) or outside [0, M) adds nothing.
The combine sums the k contributions of a token in slot order j = 0..k-1 in fp32 (a reduction by
the inverse map, not an atomic scatter), so the result is deterministic and equal run to run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_same_device, check_scale, check_tensor, fail
from .align import moe_align as _moe_align
from .moe_gemm import check_moe_gemm, moe_gemm as _moe_gemm
from .router import topk_router as _topk_router

GATHER, SILU, COMBINE, OP = "moe_gather", "moe_silu_mul", "moe_combine", "fused_moe"
WORKSPACE_ALIGN = 256     # bytes; each workspace region starts at a multiple of this


# ---- checks (shared by the references and the fakes; the CUDA launchers mirror the messages) ------

def check_moe_gather(x, sorted_pairs, top_k) -> None:
    check_tensor(GATHER, "x", x, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [T, H]")
    check_tensor(GATHER, "sorted_pairs", sorted_pairs, dtypes=(torch.int32,), dim=1, expected="int32 [T*k]")
    if top_k < 1:
        fail(GATHER, f"top_k must be >= 1; got {top_k}")
    check_same_device(GATHER, x=x, sorted_pairs=sorted_pairs)


def check_moe_silu_mul(gate_up) -> None:
    check_tensor(SILU, "gate_up", gate_up, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [M, 2I]")
    if gate_up.shape[1] % 2:
        fail(SILU, f"gate_up must be bfloat16 [M, 2I] (even width: [gate | up]); got {list(gate_up.shape)}")


def check_moe_combine(y, inverse, topk_weights, shared) -> None:
    check_tensor(COMBINE, "y", y, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [M, H]")
    check_tensor(COMBINE, "topk_weights", topk_weights, dtypes=(torch.float32,), dim=2, expected="float32 [T, k]")
    T, k = topk_weights.shape
    check_tensor(COMBINE, "inverse", inverse, dtypes=(torch.int32,), dim=1, expected=f"int32 [{T * k}]")
    if inverse.shape[0] != T * k:
        fail(COMBINE, f"inverse must be int32 [{T * k}] (T*k for topk_weights {list(topk_weights.shape)}); "
                      f"got {list(inverse.shape)}")
    if shared is not None:
        check_tensor(COMBINE, "shared", shared, dtypes=(torch.bfloat16,), dim=2, expected=f"bfloat16 [{T}, {y.shape[1]}]")
        if tuple(shared.shape) != (T, y.shape[1]):
            fail(COMBINE, f"shared must be bfloat16 [{T}, {y.shape[1]}]; got {list(shared.shape)}")
    check_same_device(COMBINE, y=y, inverse=inverse, topk_weights=topk_weights, shared=shared)


def workspace_bytes(max_tokens: int, hidden: int, inter: int, top_k: int) -> int:
    """Bytes of the caller-owned fused_moe workspace for up to max_tokens tokens: the gathered rows
    [T*k, H] bf16 and the SiLU*up activations [T*k, I] bf16, each region 256-byte aligned."""
    m = max_tokens * top_k
    up = lambda n: (n + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN
    return up(m * hidden * 2) + up(m * inter * 2)


def check_fused_moe(x, router_logits, e_bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha, top_k,
                    scoring, n_group, topk_group, expert_map, shared_out, act, a13_scale, a2_scale,
                    scale_layout, workspace) -> None:
    """Shapes that tie the stages together; each stage's own checks (moe_gemm, topk_router, moe_align)
    run inside it with that op's messages."""
    check_tensor(OP, "x", x, dtypes=(torch.bfloat16,), dim=2, expected="bfloat16 [T, H]")
    T, H = x.shape
    check_tensor(OP, "router_logits", router_logits, dtypes=(torch.float32, torch.bfloat16), dim=2,
                 expected=f"float32/bfloat16 [{T}, E_global]")
    if router_logits.shape[0] != T:
        fail(OP, f"router_logits must be [{T}, E_global] (one row per token of x); got {list(router_logits.shape)}")
    E_global = router_logits.shape[1]
    check_tensor(OP, "w13", w13, dtypes=(torch.uint8,), dim=3, expected=f"uint8 [E, 2I, {H // 2}] (packed e2m1)")
    check_tensor(OP, "w2", w2, dtypes=(torch.uint8,), dim=3, expected=f"uint8 [E, {H}, I/2] (packed e2m1)")
    E, two_i, h2 = w13.shape
    I = two_i // 2
    if H % 16 or h2 * 2 != H or two_i % 2:
        fail(OP, f"w13 must be uint8 [E, 2I, H/2] with H = x.shape[1] = {H} (a multiple of 16); got {list(w13.shape)}")
    if tuple(w2.shape) != (E, H, I // 2) or I % 16:
        fail(OP, f"w2 must be uint8 [{E}, {H}, {I // 2}] (I = {I} from w13 {list(w13.shape)}, a multiple of 16); "
                 f"got {list(w2.shape)}")
    if not 1 <= top_k <= E_global:
        fail(OP, f"top_k must be in [1, E_global = {E_global}]; got {top_k}")
    if expert_map is not None:
        check_tensor(OP, "expert_map", expert_map, dtypes=(torch.int32,), dim=1,
                     expected=f"int32 [{E_global}] (global -> local expert, -1 = not on this rank)")
        if expert_map.shape[0] != E_global:
            fail(OP, f"expert_map must be int32 [{E_global}] (one entry per column of router_logits); "
                     f"got {list(expert_map.shape)}")
    elif E != E_global:
        fail(OP, f"without expert_map, w13 must hold all E_global = {E_global} experts of router_logits; "
                 f"got E = {E} (pass expert_map for expert parallelism)")
    if shared_out is not None:
        check_tensor(OP, "shared_out", shared_out, dtypes=(torch.bfloat16,), dim=2, expected=f"bfloat16 [{T}, {H}]")
        if tuple(shared_out.shape) != (T, H):
            fail(OP, f"shared_out must be bfloat16 [{T}, {H}]; got {list(shared_out.shape)}")
    if act not in ("bf16", "nvfp4"):
        fail(OP, f"act must be one of ('bf16', 'nvfp4'); got {act!r}")
    if act == "nvfp4":
        check_scale(OP, "a13_scale", a13_scale, count=E)
        check_scale(OP, "a2_scale", a2_scale, count=E)
    elif a13_scale is not None or a2_scale is not None:
        fail(OP, "a13_scale/a2_scale are only used with act='nvfp4'; pass None for act='bf16'")
    # Each GEMM's operands, with moe_gemm's own messages (rows do not matter: M = 0 stand-ins).
    offsets = x.new_empty((E + 1,), dtype=torch.int32)
    check_moe_gemm(x.new_empty((0, H)), w13, w13_scale, w13_alpha, offsets, act, a13_scale, scale_layout)
    check_moe_gemm(x.new_empty((0, I)), w2, w2_scale, w2_alpha, offsets, act, a2_scale, scale_layout)
    if workspace is not None:
        check_tensor(OP, "workspace", workspace, dtypes=(torch.uint8,), dim=1, expected="uint8 [bytes]")
        need = workspace_bytes(T, H, I, top_k)
        if workspace.numel() < need:
            fail(OP, f"workspace must hold >= {need} bytes for T = {T} tokens (k2kernels.fused_moe."
                     f"workspace_bytes(max_tokens, H, I, top_k)); got {workspace.numel()}")
    check_same_device(OP, x=x, router_logits=router_logits, e_bias=e_bias, w13=w13, w13_scale=w13_scale,
                      w13_alpha=w13_alpha, w2=w2, w2_scale=w2_scale, w2_alpha=w2_alpha, expert_map=expert_map,
                      shared_out=shared_out, a13_scale=a13_scale, a2_scale=a2_scale, workspace=workspace)


# ---- the three kernels --------------------------------------------------------------------------

def moe_gather(x, sorted_pairs, top_k):
    check_moe_gather(x, sorted_pairs, top_k)
    T = x.shape[0]
    p = sorted_pairs.long()
    ok = (p >= 0) & (p < T * top_k)
    rows = torch.where(ok, p // top_k, torch.zeros_like(p))
    out = x[rows] if T else x.new_zeros((p.shape[0], x.shape[1]))
    return torch.where(ok.unsqueeze(1), out, torch.zeros_like(out))


def moe_silu_mul(gate_up):
    check_moe_silu_mul(gate_up)
    I = gate_up.shape[1] // 2
    g, u = gate_up[:, :I].float(), gate_up[:, I:].float()
    return (F.silu(g) * u).to(torch.bfloat16)


def moe_combine(y, inverse, topk_weights, shared=None):
    check_moe_combine(y, inverse, topk_weights, shared)
    T, k = topk_weights.shape
    M = y.shape[0]
    inv = inverse.long().reshape(T, k)
    ok = (inv >= 0) & (inv < M)
    safe = torch.where(ok, inv, torch.zeros_like(inv))
    acc = torch.zeros(T, y.shape[1], dtype=torch.float32, device=y.device)
    for j in range(k):                         # slot order, like the kernel: deterministic
        if M == 0:
            break
        contrib = topk_weights[:, j:j + 1] * y[safe[:, j]].float()
        acc = acc + torch.where(ok[:, j:j + 1], contrib, torch.zeros_like(contrib))
    if shared is not None:
        acc = acc + shared.float()
    return acc.to(torch.bfloat16)


# ---- the layer ----------------------------------------------------------------------------------

def fused_moe(x, router_logits, e_bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha, top_k,
              scoring="sigmoid", n_group=1, topk_group=1, renormalize=True, routed_scaling_factor=1.0,
              expert_map=None, shared_out=None, act="bf16", a13_scale=None, a2_scale=None,
              scale_layout="linear", workspace=None):
    """x [T, H] bf16 -> [T, H] bf16 (see the module docstring). The intermediates are rounded to bf16
    where the CUDA composite rounds them (GEMM outputs, activations), so this is the test oracle of
    the kernels; workspace is not needed here (the CUDA path carves its intermediates out of it)."""
    check_fused_moe(x, router_logits, e_bias, w13, w13_scale, w13_alpha, w2, w2_scale, w2_alpha, top_k,
                    scoring, n_group, topk_group, expert_map, shared_out, act, a13_scale, a2_scale,
                    scale_layout, workspace)
    E = w13.shape[0]
    topk_w, ids = _topk_router(router_logits, e_bias, top_k, scoring, n_group, topk_group, renormalize,
                               routed_scaling_factor)
    offsets, pairs, inverse, _ = _moe_align(ids, E, 1, expert_map)
    a = moe_gather(x, pairs, top_k)
    h = _moe_gemm(a, w13, w13_scale, w13_alpha, offsets, act, a13_scale, scale_layout)
    y = _moe_gemm(moe_silu_mul(h), w2, w2_scale, w2_alpha, offsets, act, a2_scale, scale_layout)
    return moe_combine(y, inverse, topk_w, shared_out)
