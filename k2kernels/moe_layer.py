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


def moe_forward(layer: MoELayer, x: torch.Tensor, timings: dict | None = None, impl=None) -> torch.Tensor:
    """x [T, H] bf16 -> [T, H] bf16, through `impl`: torch.ops.k2kernels (default: CUDA kernels on a GPU)
    or k2kernels.reference (the same computation by the PyTorch references, on any device).
    If `timings` is a dict, per-stage seconds are added to it (synchronizing between stages: for the
    demo, not for production)."""
    impl = torch.ops.k2kernels if impl is None else impl
    cfg, w = layer.cfg, layer.weights
    T, k, I = x.shape[0], cfg.top_k, cfg.inter
    clock = _Clock(x.device, timings)
    logits = (x.float() @ layer.gate.float().t())
    clock("router gate GEMM (torch)")
    topk_w, ids = impl.topk_router(logits, layer.bias, k, cfg.scoring, 1, 1, True, cfg.routed_scaling_factor)
    clock("topk_router")
    offsets, pairs, inverse, _ = impl.moe_align(ids, cfg.experts, 1, None)
    clock("moe_align")
    a = x[(pairs // k).long()]
    clock("gather (torch)")
    h = impl.moe_gemm(a, w.w13, w.w13_scale, w.w13_alpha, offsets, "bf16", None, "linear")
    clock("moe_gemm gate_up")
    act = (F.silu(h[:, :I].float()) * h[:, I:].float()).to(torch.bfloat16)
    clock("silu*mul (torch)")
    y = impl.moe_gemm(act, w.w2, w.w2_scale, w.w2_alpha, offsets, "bf16", None, "linear")
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
