"""Load NVFP4 MoE expert weights from checkpoint conventions into k2kernels' layout.

Our layout (what moe_gemm takes), per MoE layer:
    w13        [E, 2I, H/2] uint8   rows [gate; up], e2m1 packed along H
    w13_scale  [E, 2I, H/16] e4m3   linear block scales
    w13_alpha  [E] fp32             weight_scale_2 (W = e2m1 * scale * alpha)
    w13_input_scale [E] fp32        activation global scale for W4A4 (x ~ q * s * input_scale)
    w2 ... the same for the down projection ([E, H, I/2], [E, H, I/16]).

Sources:
  - vLLM fused names (`w13_weight`, `w13_weight_scale`, `w13_weight_scale_2`, `w13_input_scale`, `w2_*`);
  - ModelOpt per-expert HF names (`experts.{e}.{gate,up,down}_proj.{weight,weight_scale,weight_scale_2,input_scale}`);
  - compressed-tensors per-expert names (`weight_packed`, `weight_scale`, and the RECIPROCAL global
    scales `weight_global_scale = 1/weight_scale_2`, `input_global_scale = 1/input_scale`).

gate and up share one alpha per expert in our layout. When a checkpoint gives them different
weight_scale_2, the one with the smaller scale has its block scales rescaled by ws2/alpha and
re-rounded to e4m3 (vLLM instead keeps gate's scale and warns); a warning says so.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import torch

from . import nvfp4


@dataclass
class NVFP4MoEWeights:
    w13: torch.Tensor
    w13_scale: torch.Tensor
    w13_alpha: torch.Tensor
    w13_input_scale: torch.Tensor
    w2: torch.Tensor
    w2_scale: torch.Tensor
    w2_alpha: torch.Tensor
    w2_input_scale: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.w13.shape[0]

    def to(self, device) -> "NVFP4MoEWeights":
        return NVFP4MoEWeights(**{k: v.to(device) for k, v in self.__dict__.items()})

    def validate(self) -> None:
        E, two_i, h2 = self.w13.shape
        H, I = h2 * 2, two_i // 2
        want = {"w13": ((E, 2 * I, H // 2), torch.uint8), "w13_scale": ((E, 2 * I, H // 16), torch.float8_e4m3fn),
                "w13_alpha": ((E,), torch.float32), "w13_input_scale": ((E,), torch.float32),
                "w2": ((E, H, I // 2), torch.uint8), "w2_scale": ((E, H, I // 16), torch.float8_e4m3fn),
                "w2_alpha": ((E,), torch.float32), "w2_input_scale": ((E,), torch.float32)}
        for name, (shape, dtype) in want.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(f"k2kernels.loaders: {name} must be {str(dtype).replace('torch.', '')} "
                                 f"{list(shape)}; got {str(t.dtype).replace('torch.', '')} {list(t.shape)}")


def _get(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in sd:
        near = [k for k in sd if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:3]
        raise KeyError(f"k2kernels.loaders: missing tensor {key!r}" + (f"; similar keys: {near}" if near else ""))
    return sd[key]


def _unify_gate_up(gate_scale, up_scale, gate_ws2, up_ws2):
    """One alpha for [gate; up]: alpha = max; rescale the other's e4m3 block scales by ws2 / alpha."""
    alpha = torch.maximum(gate_ws2, up_ws2)
    if not torch.equal(gate_ws2, up_ws2):
        warnings.warn("k2kernels.loaders: gate and up have different weight_scale_2; rescaling block "
                      "scales to a shared alpha (e4m3 re-rounding, < 2^-4 relative per block)", RuntimeWarning)

    def rescale(s, ws2):
        ratio = (ws2 / alpha).reshape(-1, *([1] * (s.dim() - 1)))
        return nvfp4.e4m3_satfinite(s.float() * ratio)
    return rescale(gate_scale, gate_ws2), rescale(up_scale, up_ws2), alpha


def from_vllm(sd: Mapping[str, torch.Tensor], prefix: str = "") -> NVFP4MoEWeights:
    """vLLM's fused MoE parameter names; w13_weight_scale_2 may be [E] or [E, 2] (gate, up)."""
    g = lambda n: _get(sd, prefix + n)
    w13, w13_s, ws2 = g("w13_weight"), g("w13_weight_scale"), g("w13_weight_scale_2").float()
    if ws2.dim() == 2:
        I = w13.shape[1] // 2
        gs, us, ws2 = _unify_gate_up(w13_s[:, :I], w13_s[:, I:], ws2[:, 0], ws2[:, 1])
        w13_s = torch.cat([gs, us], dim=1)
    in13 = g("w13_input_scale").float()
    in13 = in13.amax(-1) if in13.dim() == 2 else in13
    out = NVFP4MoEWeights(w13.contiguous(), w13_s.contiguous(), ws2.contiguous(), in13.contiguous(),
                          g("w2_weight").contiguous(), g("w2_weight_scale").contiguous(),
                          g("w2_weight_scale_2").float().reshape(-1).contiguous(), g("w2_input_scale").float().reshape(-1).contiguous())
    out.validate()
    return out


def _per_expert(sd, prefix, num_experts, names, reciprocal: bool) -> NVFP4MoEWeights:
    weight, scale, wgs, igs = names
    parts = {p: {k: [] for k in ("w", "s", "ws2", "in")} for p in ("gate_proj", "up_proj", "down_proj")}
    for e in range(num_experts):
        for p in parts:
            base = f"{prefix}experts.{e}.{p}."
            parts[p]["w"].append(_get(sd, base + weight))
            parts[p]["s"].append(_get(sd, base + scale))
            ws2 = _get(sd, base + wgs).float().reshape(())
            ins = _get(sd, base + igs).float().reshape(())
            parts[p]["ws2"].append(1.0 / ws2 if reciprocal else ws2)
            parts[p]["in"].append(1.0 / ins if reciprocal else ins)
    st = {p: {k: torch.stack(v) for k, v in d.items()} for p, d in parts.items()}
    gs, us, alpha = _unify_gate_up(st["gate_proj"]["s"], st["up_proj"]["s"], st["gate_proj"]["ws2"], st["up_proj"]["ws2"])
    out = NVFP4MoEWeights(
        w13=torch.cat([st["gate_proj"]["w"], st["up_proj"]["w"]], dim=1).contiguous(),
        w13_scale=torch.cat([gs, us], dim=1).contiguous(),
        w13_alpha=alpha.contiguous(),
        w13_input_scale=torch.maximum(st["gate_proj"]["in"], st["up_proj"]["in"]).contiguous(),
        w2=st["down_proj"]["w"].contiguous(), w2_scale=st["down_proj"]["s"].contiguous(),
        w2_alpha=st["down_proj"]["ws2"].contiguous(), w2_input_scale=st["down_proj"]["in"].contiguous())
    out.validate()
    return out


def from_modelopt(sd: Mapping[str, torch.Tensor], prefix: str, num_experts: int) -> NVFP4MoEWeights:
    """ModelOpt NVFP4 HF checkpoint, e.g. prefix 'model.layers.3.mlp.' (Kimi-K2 / DeepSeek naming)."""
    return _per_expert(sd, prefix, num_experts, ("weight", "weight_scale", "weight_scale_2", "input_scale"), False)


def from_compressed_tensors(sd: Mapping[str, torch.Tensor], prefix: str, num_experts: int) -> NVFP4MoEWeights:
    """compressed-tensors NVFP4 ('nvfp4-pack-quantized'): global scales are stored as reciprocals."""
    return _per_expert(sd, prefix, num_experts,
                       ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale"), True)


def quantize_moe(w13: torch.Tensor, w2: torch.Tensor, input_scale: float = 1.0) -> NVFP4MoEWeights:
    """Quantize BF16/fp32 expert weights (w13 [E, 2I, H] with rows [gate; up], w2 [E, H, I]) with the
    ModelOpt rule: for tests, benchmarks and the demo."""
    E = w13.shape[0]
    q13, s13, a13 = nvfp4.quantize_weight(w13)
    q2, s2, a2 = nvfp4.quantize_weight(w2)
    ins = torch.full((E,), float(input_scale), device=w13.device)
    return NVFP4MoEWeights(q13, s13, a13.float(), ins, q2, s2, a2.float(), ins.clone())
