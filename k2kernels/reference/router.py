"""Reference of topk_router (DeepSeek/Kimi noaux_tc routing and plain softmax top-k).

Selection uses c = s + bias; the returned weights are the unbiased scores s. Ties go to the lower
expert index (stable sort); weights come in selection order (descending c).

Non-finite inputs: logits and bias are first mapped to finite values, NaN -> -FLT_MAX and
+-inf -> +-FLT_MAX. So a NaN or -inf logit behaves like the lowest possible logit (sigmoid score 0,
softmax share 0, picked last), +inf like the highest; a row of only NaN/-inf gets sigmoid scores 0
(weights 0 after renormalize: 0 / max(0, 1e-20)) or uniform softmax scores 1/E; ties go to the lower
expert index. Every c is finite, so no NaN ever reaches the selection or the output, and one bad
logit cannot poison its row. The CUDA kernel (csrc/routing/topk_router.cu) does the same."""
from __future__ import annotations

import torch

from .._checks import check_same_device, check_tensor, fail

OP = "topk_router"
SCORINGS = ("softmax", "sigmoid")


def check_topk_router(logits, bias, top_k, scoring, n_group, topk_group) -> None:
    check_tensor(OP, "logits", logits, dtypes=(torch.float32, torch.bfloat16), dim=2,
                 expected="float32/bfloat16 [T, E]")
    E = logits.shape[1]
    if not 1 <= E <= 1024:
        fail(OP, f"logits must have 1 <= E <= 1024 experts; got E={E}")
    if bias is not None:
        check_tensor(OP, "bias", bias, dtypes=(torch.float32,), dim=1, expected=f"float32 [{E}]")
        if bias.shape[0] != E:
            fail(OP, f"bias must be float32 [{E}]; got {list(bias.shape)}")
    if scoring not in SCORINGS:
        fail(OP, f"scoring must be one of {SCORINGS}; got {scoring!r}")
    if n_group < 1 or E % n_group:
        fail(OP, f"n_group must divide E = {E}; got n_group={n_group}")
    if not 1 <= topk_group <= n_group:
        fail(OP, f"topk_group must be in [1, n_group={n_group}]; got {topk_group}")
    allowed = topk_group * (E // n_group)
    if not 1 <= top_k <= min(16, allowed):
        fail(OP, f"top_k must be in [1, {min(16, allowed)}] (<= 16 and <= experts in the kept groups); got {top_k}")
    check_same_device(OP, logits=logits, bias=bias)


def group_scores(s, c, has_bias, n_group):
    """[T, n_group]: sum of the top-2 biased scores c per group with a bias (one expert per group:
    its c), else the max unbiased score s per group."""
    T, E = s.shape
    if has_bias:
        g = c.reshape(T, n_group, E // n_group)
        return g.topk(2, dim=-1).values.sum(-1) if E // n_group >= 2 else g[..., 0]
    return s.reshape(T, n_group, E // n_group).amax(-1)


def router_scores(logits, bias, scoring="sigmoid", n_group=1, topk_group=1):
    """(s, c): the unbiased scores s [T, E] fp32 and the selection scores c = s + bias with the
    experts of dropped groups at -inf. ids = the top_k of c; weights come from s."""
    T, E = logits.shape
    fmax = torch.finfo(torch.float32).max
    x = torch.nan_to_num(logits.float(), nan=-fmax, posinf=fmax, neginf=-fmax)
    s = torch.softmax(x, dim=-1) if scoring == "softmax" else torch.sigmoid(x)
    if bias is not None:
        bias = torch.nan_to_num(bias, nan=-fmax, posinf=fmax, neginf=-fmax)
    c = s + bias if bias is not None else s.clone()
    if n_group > 1:
        gscore = group_scores(s, c, bias is not None, n_group)
        gorder = torch.sort(gscore, dim=-1, descending=True, stable=True).indices[:, :topk_group]
        keep = torch.zeros(T, n_group, dtype=torch.bool, device=x.device)
        keep.scatter_(1, gorder, True)
        c = c.masked_fill(~keep.repeat_interleave(E // n_group, dim=1), float("-inf"))
    return s, c


def topk_router(logits, bias, top_k, scoring="sigmoid", n_group=1, topk_group=1, renormalize=True,
                routed_scaling_factor=1.0):
    check_topk_router(logits, bias, top_k, scoring, n_group, topk_group)
    s, c = router_scores(logits, bias, scoring, n_group, topk_group)
    ids = torch.sort(c, dim=-1, descending=True, stable=True).indices[:, :top_k]
    w = s.gather(1, ids)
    if renormalize:
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-20)
    w = w * routed_scaling_factor
    return w.contiguous(), ids.to(torch.int32).contiguous()
