"""REAP-style expert pruning (Router-weighted Expert Activation Pruning) for one MoE layer.

Saliency of expert j over calibration tokens X_j routed to it (j in the token's top-k):

    S_j = (1 / |X_j|) * sum_{x in X_j} g_j(x) * || f_j(x) ||_2

g_j(x) is the router weight the layer really applies (after renormalisation; the constant
routed_scaling_factor is left out, it does not change the ranking) and
f_j(x) = W2_j (SiLU(W_gate_j x) * (W_up_j x)) is the expert's output. An expert no calibration
token reaches has S_j = 0 and is the first to go. Keep the N largest; ties keep the lower index.

Pure PyTorch, fp32 math, any device. Routing follows the contract's topk_router:
s = sigmoid/softmax(logits); choice by s + bias; weights s[ids] (unbiased), renormalised.
Depends on nothing else in k2kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def route(hidden: torch.Tensor, gate_weight: torch.Tensor, top_k: int, scoring: str = "sigmoid",
          bias: torch.Tensor | None = None, renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Router of the contract (n_group 1): returns weights [T, k] fp32 and ids [T, k] int64."""
    logits = hidden.float() @ gate_weight.float().t()
    if scoring == "sigmoid":
        s = torch.sigmoid(logits)
    elif scoring == "softmax":
        s = torch.softmax(logits, dim=-1)
    else:
        raise ValueError(f"k2kernels.reap: scoring must be 'sigmoid' or 'softmax'; got {scoring!r}")
    choice = s if bias is None else s + bias.float()
    ids = torch.topk(choice, top_k, dim=-1, sorted=True).indices
    w = s.gather(-1, ids)
    if renormalize:
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-20)
    return w, ids


def expert_forward(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One expert: x [n, H], w13 [2I, H] rows [gate; up], w2 [H, I] -> [n, H], fp32."""
    inter = w2.shape[-1]
    gu = x.float() @ w13.float().t()
    return (F.silu(gu[:, :inter]) * gu[:, inter:]) @ w2.float().t()


def _check_shapes(gate_weight, w13, w2, bias):
    e, h = gate_weight.shape
    if w13.dim() != 3 or w13.shape[0] != e or w13.shape[2] != h or w13.shape[1] % 2:
        raise ValueError(f"k2kernels.reap: w13 must be [E={e}, 2I, H={h}]; got {list(w13.shape)}")
    i = w13.shape[1] // 2
    if tuple(w2.shape) != (e, h, i):
        raise ValueError(f"k2kernels.reap: w2 must be [E={e}, H={h}, I={i}]; got {list(w2.shape)}")
    if bias is not None and tuple(bias.shape) != (e,):
        raise ValueError(f"k2kernels.reap: bias must be [E={e}]; got {list(bias.shape)}")


class ReapAccumulator:
    """Accumulates sum of g * ||f|| and routed-token counts per expert over calibration batches."""

    def __init__(self, gate_weight: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, top_k: int,
                 scoring: str = "sigmoid", bias: torch.Tensor | None = None, renormalize: bool = True):
        _check_shapes(gate_weight, w13, w2, bias)
        if not 1 <= top_k <= gate_weight.shape[0]:
            raise ValueError(f"k2kernels.reap: top_k must be in [1, E={gate_weight.shape[0]}]; got {top_k}")
        self.gate_weight, self.w13, self.w2, self.bias = gate_weight, w13, w2, bias
        self.top_k, self.scoring, self.renormalize = top_k, scoring, renormalize
        e = gate_weight.shape[0]
        self.weighted_norm_sum = torch.zeros(e, dtype=torch.float64, device=gate_weight.device)
        self.counts = torch.zeros(e, dtype=torch.int64, device=gate_weight.device)

    @torch.no_grad()
    def update(self, hidden: torch.Tensor) -> None:
        """hidden [..., H]: the MoE layer's input (after the post-attention norm)."""
        x = hidden.reshape(-1, hidden.shape[-1])
        if x.shape[-1] != self.gate_weight.shape[1]:
            raise ValueError(f"k2kernels.reap: hidden must end in H={self.gate_weight.shape[1]}; "
                             f"got {list(hidden.shape)}")
        w, ids = route(x, self.gate_weight, self.top_k, self.scoring, self.bias, self.renormalize)
        flat_ids, flat_w = ids.reshape(-1), w.reshape(-1)
        token_of = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.top_k)
        for e in torch.unique(flat_ids).tolist():
            sel = flat_ids == e
            out = expert_forward(x[token_of[sel]], self.w13[e], self.w2[e])
            self.weighted_norm_sum[e] += (flat_w[sel] * out.norm(dim=-1)).double().sum()
            self.counts[e] += int(sel.sum())

    def scores(self) -> torch.Tensor:
        """Mean router-weighted output norm per expert [E] fp64; 0 for never-routed experts."""
        return self.weighted_norm_sum / self.counts.clamp_min(1)


def select_experts(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the n_keep highest scores, ascending (original order kept); ties -> lower index."""
    e = scores.numel()
    if not 1 <= n_keep <= e:
        raise ValueError(f"k2kernels.reap: n_keep must be in [1, E={e}]; got {n_keep}")
    order = torch.argsort(-scores.double().cpu(), stable=True)
    return torch.sort(order[:n_keep]).values.to(scores.device)


@dataclass
class PrunedMoE:
    kept: torch.Tensor               # [N] int64, original expert ids, ascending
    scores: torch.Tensor             # [E] fp64 REAP saliency of every original expert
    counts: torch.Tensor             # [E] routed calibration tokens per original expert
    gate_weight: torch.Tensor        # [N, H] router rows of the kept experts
    bias: torch.Tensor | None        # [N] correction bias of the kept experts
    w13: torch.Tensor                # [N, 2I, H]
    w2: torch.Tensor                 # [N, H, I]


def prune(gate_weight, w13, w2, kept, bias=None):
    """Keep experts `kept` (new expert i = old expert kept[i]) in weights and router."""
    kept = kept.to(gate_weight.device)
    return (gate_weight[kept].clone(), None if bias is None else bias[kept].clone(),
            w13[kept].clone(), w2[kept].clone())


@torch.no_grad()
def reap_prune(hidden, gate_weight, w13, w2, n_keep: int, top_k: int, scoring: str = "sigmoid",
               bias: torch.Tensor | None = None, renormalize: bool = True) -> PrunedMoE:
    """Score experts on calibration `hidden` [..., H] (or an iterable of such batches) and keep
    the n_keep most salient. top_k stays the same after pruning (the checkpoint's config)."""
    acc = ReapAccumulator(gate_weight, w13, w2, top_k, scoring, bias, renormalize)
    for batch in ([hidden] if isinstance(hidden, torch.Tensor) else hidden):
        acc.update(batch)
    scores = acc.scores()
    kept = select_experts(scores, n_keep)
    g, b, a, d = prune(gate_weight, w13, w2, kept, bias)
    return PrunedMoE(kept=kept, scores=scores, counts=acc.counts.clone(), gate_weight=g, bias=b,
                     w13=a, w2=d)


def moe_forward(hidden, gate_weight, w13, w2, top_k, scoring="sigmoid", bias=None,
                renormalize=True, routed_scaling_factor=1.0) -> torch.Tensor:
    """Plain routed-MoE forward (no shared expert), fp32: used to check a pruned layer."""
    x = hidden.reshape(-1, hidden.shape[-1])
    w, ids = route(x, gate_weight, top_k, scoring, bias, renormalize)
    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        out.index_add_(0, tok, expert_forward(x[tok], w13[e], w2[e]) * w[tok, slot, None])
    return (out * routed_scaling_factor).reshape(*hidden.shape[:-1], w2.shape[1])
