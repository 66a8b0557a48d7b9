"""A Kimi-K2 MoE layer composed from the k2kernels ops (router -> align -> gate_up GEMM -> SiLU*up
-> down GEMM -> weighted combine). The unfused composite: what the demo runs and what a fused MoE
must match. Presets hold the real model shapes (docs/contract.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .loaders import NVFP4MoEWeights, quantize_moe


@dataclass(frozen=True)
class MoEConfig:
    hidden: int
    inter: int
    experts: int
    top_k: int
    scoring: str = "sigmoid"
    routed_scaling_factor: float = 2.827
    layers: int = 60           # MoE layers (Kimi-K2: 61 layers, the first dense)


PRESETS = {
    "kimi-k2": MoEConfig(7168, 2048, 384, 8),
    "k2.6": MoEConfig(7168, 2048, 384, 6),
    "k2.0": MoEConfig(6144, 2048, 384, 8),
    "tiny": MoEConfig(256, 128, 16, 4),      # CPU-sized, same structure
}


@dataclass
class MoELayer:
    cfg: MoEConfig
    gate: torch.Tensor          # router gate [E, H] bf16
    bias: torch.Tensor          # e_score_correction_bias [E] fp32
    weights: NVFP4MoEWeights

    @classmethod
    def random(cls, cfg: MoEConfig, device="cpu", seed=0, chunk: int = 16) -> "MoELayer":
        """Random BF16 weights, quantized with the ModelOpt rule. Generated and quantized on `device`,
        `chunk` experts at a time: Kimi-K2's 384 experts are 22 GB in BF16, too much to build at once
        (and far too slow to generate on the host)."""
        g = torch.Generator(device=device).manual_seed(seed)
        E, H, I = cfg.experts, cfg.hidden, cfg.inter
        gate = (torch.randn(E, H, generator=g, device=device) * H ** -0.5).to(torch.bfloat16)
        bias = torch.randn(E, generator=g, device=device) * 0.01
        parts = []
        for e0 in range(0, E, chunk):
            n = min(chunk, E - e0)
            w13 = (torch.randn(n, 2 * I, H, generator=g, device=device) * H ** -0.5).to(torch.bfloat16)
            w2 = (torch.randn(n, H, I, generator=g, device=device) * I ** -0.5).to(torch.bfloat16)
            parts.append(quantize_moe(w13, w2))
            del w13, w2
        w = NVFP4MoEWeights(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(NVFP4MoEWeights)))
        return cls(cfg, gate, bias, w)


def route(layer: MoELayer, x: torch.Tensor, impl=None, clock=None):
    """The router step: fp32 gate GEMM + topk_router -> (topk_w [T, k] fp32, ids [T, k] int32)."""
    impl = torch.ops.k2kernels if impl is None else impl
    clock = clock or _no_clock
    cfg = layer.cfg
    logits = x.float() @ layer.gate.float().t()
    clock("router gate GEMM (torch)")
    topk_w, ids = impl.topk_router(logits, layer.bias, cfg.top_k, cfg.scoring, 1, 1, True, cfg.routed_scaling_factor)
    clock("topk_router")
    return topk_w, ids


def experts_forward(weights: NVFP4MoEWeights, x: torch.Tensor, topk_w: torch.Tensor, ids: torch.Tensor,
                    expert_map: torch.Tensor | None = None, impl=None, clock=None) -> torch.Tensor:
    """The post-routing half: out[t] = sum_j topk_w[t, j] * expert_{ids[t, j]}(x[t]) -> [T, H] bf16
    (combine in fp32, one rounding). With `expert_map` (global -> local expert, -1 = not on this rank;
    ids are then global) pairs of other ranks contribute nothing: moe_align gives them inverse -1 and
    they are masked, never indexed. TP and EP (k2kernels/parallel) call this on their shards."""
    impl = torch.ops.k2kernels if impl is None else impl
    clock = clock or _no_clock
    T, k = ids.shape
    I = weights.w13.shape[1] // 2
    offsets, pairs, inverse, _ = impl.moe_align(ids, weights.num_experts, 1, expert_map)
    clock("moe_align")
    a = x[(pairs // k).long()]
    clock("gather (torch)")
    h = impl.moe_gemm(a, weights.w13, weights.w13_scale, weights.w13_alpha, offsets, "bf16", None, "linear")
    clock("moe_gemm gate_up")
    act = (F.silu(h[:, :I].float()) * h[:, I:].float()).to(torch.bfloat16)
    clock("silu*mul (torch)")
    y = impl.moe_gemm(act, weights.w2, weights.w2_scale, weights.w2_alpha, offsets, "bf16", None, "linear")
    clock("moe_gemm down")
    inv = inverse.long()
    rows = torch.where((inv >= 0).unsqueeze(-1), y.float()[inv.clamp_min(0)], 0.0)
    out = (rows.reshape(T, k, -1) * topk_w.unsqueeze(-1)).sum(1).to(torch.bfloat16)
    clock("combine (torch)")
    return out


def moe_forward(layer: MoELayer, x: torch.Tensor, timings: dict | None = None, impl=None) -> torch.Tensor:
    """x [T, H] bf16 -> [T, H] bf16: route + experts_forward, through `impl`: torch.ops.k2kernels
    (default: CUDA kernels on a GPU) or k2kernels.reference (the same computation by the PyTorch
    references, on any device). If `timings` is a dict, per-stage seconds are added to it
    (synchronizing between stages: for the demo, not for production)."""
    clock = _Clock(x.device, timings) if timings is not None else _no_clock
    topk_w, ids = route(layer, x, impl, clock)
    return experts_forward(layer.weights, x, topk_w, ids, None, impl, clock)


class _Clock:
    def __init__(self, device, timings):
        self.device, self.timings = device, timings
        self._sync()
        self.t = time.perf_counter()

    def _sync(self):
        if self.timings is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, stage):
        if self.timings is None:
            return
        self._sync()
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
        self.t = now


def _no_clock(stage: str) -> None:
    """Stage marker when nobody times: no host clock call, so torch.compile(fullgraph=True) can trace."""
