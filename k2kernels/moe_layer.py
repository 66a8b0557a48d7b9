"""A Kimi-K2 MoE layer composed from the k2kernels ops (router -> align -> gate_up GEMM -> SiLU*up
-> down GEMM -> weighted combine). The unfused composite: what the demo runs and what a fused MoE
must match. Presets hold the real model shapes (shared/docs/contract.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import ops
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
    def random(cls, cfg: MoEConfig, device="cpu", seed=0) -> "MoELayer":
        g = torch.Generator(device="cpu").manual_seed(seed)
        E, H, I = cfg.experts, cfg.hidden, cfg.inter
        gate = (torch.randn(E, H, generator=g) * H ** -0.5).to(torch.bfloat16)
        bias = torch.randn(E, generator=g) * 0.01
        w13 = torch.randn(E, 2 * I, H, generator=g, dtype=torch.bfloat16) * H ** -0.5
        w2 = torch.randn(E, H, I, generator=g, dtype=torch.bfloat16) * I ** -0.5
        w = quantize_moe(w13.to(device), w2.to(device))
        return cls(cfg, gate.to(device), bias.to(device), w)


def moe_forward(layer: MoELayer, x: torch.Tensor, timings: dict | None = None) -> torch.Tensor:
    """x [T, H] bf16 -> [T, H] bf16. If `timings` is a dict, per-stage seconds are added to it
    (synchronizing between stages: for the demo, not for production)."""
    cfg, w = layer.cfg, layer.weights
    T, k, I = x.shape[0], cfg.top_k, cfg.inter
    clock = _Clock(x.device, timings)
    logits = (x.float() @ layer.gate.float().t())
    clock("router gate GEMM (torch)")
    topk_w, ids = ops.topk_router(logits, k, layer.bias, cfg.scoring, renormalize=True,
                                  routed_scaling_factor=cfg.routed_scaling_factor)
    clock("topk_router")
    offsets, pairs, inverse, _ = ops.moe_align(ids, cfg.experts)
    clock("moe_align")
    a = x[(pairs // k).long()]
    clock("gather (torch)")
    h = ops.moe_gemm(a, w.w13, w.w13_scale, w.w13_alpha, offsets)
    clock("moe_gemm gate_up")
    act = (F.silu(h[:, :I].float()) * h[:, I:].float()).to(torch.bfloat16)
    clock("silu*mul (torch)")
    y = ops.moe_gemm(act, w.w2, w.w2_scale, w.w2_alpha, offsets)
    clock("moe_gemm down")
    out = (y.float()[inverse.long()].reshape(T, k, -1) * topk_w.unsqueeze(-1)).sum(1).to(torch.bfloat16)
    clock("combine (torch)")
    return out


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
