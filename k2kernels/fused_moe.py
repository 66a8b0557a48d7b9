"""The fused Kimi-K2 MoE layer, Python side: workspace sizing and the `KimiMoE` nn.Module.

`torch.ops.k2kernels.fused_moe` (schema in csrc/torch_bindings.cpp, wrapper `k2kernels.ops.fused_moe`)
runs one MoE layer: router -> align -> row gather -> gate_up GEMM -> SiLU*up -> down GEMM -> top-k
combine (+ the shared expert's output). On CUDA it is a C++ composite (csrc/fused_moe/fused_moe_ops.cpp)
of the routing and moe_gemm families' ops and this family's gather / silu_mul / combine kernels, so it
is exactly as fast as those kernels plus three small memory-bound launches (docs/fused_moe.md says
what is and is not fused). On CPU it is the reference (k2kernels/reference/fused_moe.py).

`KimiMoE` is a Kimi-K2 / DeepSeek-V3 MoE block: fp32 router gate (+ e_score_correction_bias, sigmoid
scoring, renormalize, routed_scaling_factor), NVFP4 routed experts, one BF16 shared expert, optional
expert parallelism (`expert_map`: global expert -> local index, -1 = on another rank; this rank's
output then holds only its experts' share, and the engine all-reduces across ranks). Its workspace is
allocated once from a max-token bound, so the forward allocates only its output (CUDA-graph friendly).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import loaders, nvfp4
from .moe_layer import MoEConfig
from .ops import fused_moe
from .reference.fused_moe import workspace_bytes

__all__ = ["KimiMoE", "workspace_bytes", "fused_moe", "local_experts"]

FORMATS = ("modelopt", "compressed-tensors", "vllm")
WEIGHT_LAYOUTS = ("auto", "linear", "tiled")  # tiled: moe_gemm's pre-permuted layout (needs H, I % 512 == 0)


def local_experts(expert_map: Optional[torch.Tensor], num_experts: int) -> list[int]:
    """Global expert ids held by this rank, in local order (local index l holds global id result[l])."""
    if expert_map is None:
        return list(range(num_experts))
    m = expert_map.tolist()
    n_local = max(m) + 1 if any(v >= 0 for v in m) else 0
    out = [-1] * n_local
    for g, l in enumerate(m):
        if l >= 0:
            if out[l] != -1:
                raise ValueError(f"k2kernels.KimiMoE: expert_map maps global experts {out[l]} and {g} to the same local {l}")
            out[l] = g
    if -1 in out:
        raise ValueError(f"k2kernels.KimiMoE: expert_map leaves local experts {[l for l, g in enumerate(out) if g < 0]} "
                         f"unmapped; local indices must be 0..{n_local - 1}")
    return out


class _LocalExperts(Mapping):
    """A view of a per-expert state dict in which `experts.{l}.` means `experts.{globals[l]}.`, so the
    per-expert loaders load only this rank's experts (nothing is copied)."""

    def __init__(self, sd: Mapping[str, torch.Tensor], prefix: str, globals_: list[int]):
        self.sd, self.head, self.globals = sd, prefix + "experts.", globals_

    def _map(self, key: str) -> str:
        if not key.startswith(self.head):
            return key
        local, rest = key[len(self.head):].split(".", 1)
        return f"{self.head}{self.globals[int(local)]}.{rest}"

    def __getitem__(self, key):
        return self.sd[self._map(key)]

    def __contains__(self, key):
        try:
            return self._map(key) in self.sd
        except (ValueError, IndexError):
            return False

    def __iter__(self):
        return iter(self.sd)

    def __len__(self):
        return len(self.sd)


class KimiMoE(nn.Module):
    """Kimi-K2 MoE block over torch.ops.k2kernels.fused_moe. x [..., H] bf16 -> [..., H] bf16."""

    def __init__(self, cfg: MoEConfig, weights: loaders.NVFP4MoEWeights, gate_weight: torch.Tensor,
                 e_score_correction_bias: Optional[torch.Tensor] = None, shared: Optional[dict] = None,
                 expert_map: Optional[torch.Tensor] = None, max_tokens: int = 0, act: str = "bf16",
                 n_group: int = 1, topk_group: int = 1, weight_layout: str = "auto"):
        super().__init__()
        weights.validate()
        if weight_layout not in WEIGHT_LAYOUTS:
            raise ValueError(f"k2kernels.KimiMoE: weight_layout must be one of {WEIGHT_LAYOUTS}; got {weight_layout!r}")
        E_global = gate_weight.shape[0]
        if gate_weight.shape != (E_global, cfg.hidden):
            raise ValueError(f"k2kernels.KimiMoE: gate_weight must be [E_global, {cfg.hidden}]; got {list(gate_weight.shape)}")
        if expert_map is None and weights.num_experts != E_global:
            raise ValueError(f"k2kernels.KimiMoE: {weights.num_experts} experts loaded but the gate has {E_global}; "
                             f"pass expert_map for expert parallelism")
        self.cfg, self.act, self.n_group, self.topk_group = cfg, act, n_group, topk_group
        self.hidden, self.inter = weights.w13.shape[2] * 2, weights.w13.shape[1] // 2
        # Router in fp32 (as the HF Kimi/DeepSeek-V3 gate); 384 x 7168 fp32 = 11 MB, read once per step.
        self.register_buffer("gate_weight", gate_weight.float().contiguous())
        self.register_buffer("e_score_correction_bias",
                             None if e_score_correction_bias is None else e_score_correction_bias.float().contiguous())
        if weight_layout == "auto":
            # tiled where moe_gemm can use it: 5-8 % faster on the H200 (autotune, 2026-11-29: T=1 110 vs
            # 118 us, T=64 2590 vs 2687 us); on CPU the reference would untile it every call; W4A4 keeps
            # the checkpoint layout (the SM120 native kernel reads swizzled scales, not tiled ones).
            H, I = weights.w13.shape[2] * 2, weights.w13.shape[1] // 2
            tiled_ok = weights.w13.is_cuda and act == "bf16" and H % 512 == 0 and I % 512 == 0
            weight_layout = "tiled" if tiled_ok else "linear"
        if weight_layout == "tiled":
            # moe_gemm's tiled layout (k2kernels/moe_gemm_prepare.py): permuted once here, never per call
            from .moe_gemm_prepare import prepare_moe_gemm_weights
            w13, s13 = prepare_moe_gemm_weights(weights.w13, weights.w13_scale)
            w2, s2 = prepare_moe_gemm_weights(weights.w2, weights.w2_scale)
            weights = loaders.NVFP4MoEWeights(w13, s13, weights.w13_alpha, weights.w13_input_scale,
                                              w2, s2, weights.w2_alpha, weights.w2_input_scale)
        self.weight_layout = weight_layout
        for name, t in weights.__dict__.items():
            self.register_buffer(name, t)
        self.register_buffer("expert_map", None if expert_map is None else expert_map.to(torch.int32).contiguous())
        self.has_shared = shared is not None
        if shared is not None:
            for name in ("gate_proj", "up_proj", "down_proj"):
                self.register_buffer(f"shared_{name}", shared[name].to(torch.bfloat16).contiguous())
        self.max_tokens = 0
        self.register_buffer("workspace", None, persistent=False)
        if max_tokens:
            self.allocate_workspace(max_tokens)

    # ---- workspace -------------------------------------------------------------------------------
    def allocate_workspace(self, max_tokens: int) -> None:
        """Allocate the caller-owned scratch for up to max_tokens tokens per forward (once, before
        capturing CUDA graphs; forwards with more tokens raise)."""
        n = workspace_bytes(max_tokens, self.hidden, self.inter, self.cfg.top_k)
        self.workspace = torch.empty(n, dtype=torch.uint8, device=self.w13.device)
        self.max_tokens = max_tokens

    # ---- forward ---------------------------------------------------------------------------------
    def router_logits(self, x2: torch.Tensor) -> torch.Tensor:
        return F.linear(x2.float(), self.gate_weight)

    def shared_expert(self, x2: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.has_shared:
            return None
        return F.linear(F.silu(F.linear(x2, self.shared_gate_proj)) * F.linear(x2, self.shared_up_proj),
                        self.shared_down_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        return self.routed(x2, self.router_logits(x2), self.shared_expert(x2)).reshape(shape)

    def routed(self, x2: torch.Tensor, logits: torch.Tensor, shared_out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The fused op alone: x2 [T, H] bf16, router logits [T, E_global] -> [T, H] (+ shared_out)."""
        ws = None
        if self.workspace is not None:
            if x2.shape[0] > self.max_tokens:
                raise ValueError(f"k2kernels.KimiMoE: {x2.shape[0]} tokens > max_tokens = {self.max_tokens} "
                                 f"(the workspace bound); call allocate_workspace(n) with a larger n")
            ws = self.workspace
        a13 = self.w13_input_scale if self.act == "nvfp4" else None
        a2 = self.w2_input_scale if self.act == "nvfp4" else None
        return fused_moe(x2, logits, self.w13, self.w13_scale, self.w13_alpha, self.w2,
                         self.w2_scale, self.w2_alpha, self.cfg.top_k, e_bias=self.e_score_correction_bias,
                         scoring=self.cfg.scoring, n_group=self.n_group, topk_group=self.topk_group,
                         renormalize=True, routed_scaling_factor=self.cfg.routed_scaling_factor,
                         expert_map=self.expert_map, shared_out=shared_out, act=self.act,
                         a13_scale=a13, a2_scale=a2, scale_layout=self.weight_layout, workspace=ws)

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], prefix: str, cfg: MoEConfig, fmt: str = "modelopt",
                        expert_map: Optional[torch.Tensor] = None, device=None, **kw) -> "KimiMoE":
        """Load one MoE block from a checkpoint state dict, prefix e.g. 'model.layers.3.mlp.'.

        fmt: 'modelopt' (experts.{e}.{gate,up,down}_proj.{weight,weight_scale,weight_scale_2,input_scale}),
        'compressed-tensors' (weight_packed, weight_global_scale = 1/weight_scale_2, ...), or 'vllm'
        (fused experts.w13_weight ...). Gate: '{prefix}gate.weight' (+ 'gate.e_score_correction_bias');
        shared expert: '{prefix}shared_experts.{gate,up,down}_proj.weight' (BF16) when present.
        With expert_map only this rank's experts are loaded."""
        if fmt not in FORMATS:
            raise ValueError(f"k2kernels.KimiMoE: fmt must be one of {FORMATS}; got {fmt!r}")
        gate = loaders._get(sd, prefix + "gate.weight")
        E_global = gate.shape[0]
        glob = local_experts(expert_map, E_global)
        if fmt == "vllm":
            w = loaders.from_vllm(sd, prefix + "experts.")
            if expert_map is not None:
                idx = torch.tensor(glob, dtype=torch.long, device=w.w13.device)
                w = loaders.NVFP4MoEWeights(**{k: v.index_select(0, idx).contiguous() for k, v in w.__dict__.items()})
        else:
            view = _LocalExperts(sd, prefix, glob) if expert_map is not None else sd
            load = loaders.from_modelopt if fmt == "modelopt" else loaders.from_compressed_tensors
            w = load(view, prefix, len(glob))
        bias = sd.get(prefix + "gate.e_score_correction_bias")
        shared = None
        if prefix + "shared_experts.gate_proj.weight" in sd:
            shared = {p: loaders._get(sd, f"{prefix}shared_experts.{p}.weight") for p in ("gate_proj", "up_proj", "down_proj")}
        m = cls(cfg, w, gate, bias, shared, expert_map, **kw)
        return m.to(device) if device is not None else m

    @classmethod
    def random(cls, cfg: MoEConfig, device="cpu", seed: int = 0, shared: bool = True,
               expert_map: Optional[torch.Tensor] = None, **kw) -> "KimiMoE":
        """Random weights of the right scale (tests, benchmarks, the demo); NVFP4-quantized with the
        ModelOpt rule. With expert_map only the local experts are generated."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        E, H, I = cfg.experts, cfg.hidden, cfg.inter
        gate = (torch.randn(E, H, generator=g) * H ** -0.5).to(torch.bfloat16)      # checkpoints store it in bf16
        bias = torch.randn(E, generator=g) * 0.01
        n_local = len(local_experts(expert_map, E))
        w13 = torch.randn(n_local, 2 * I, H, generator=g) * H ** -0.5
        w2 = torch.randn(n_local, H, I, generator=g) * I ** -0.5
        w = loaders.quantize_moe(w13.to(device), w2.to(device))
        sh = None
        if shared:
            sh = {"gate_proj": torch.randn(I, H, generator=g) * H ** -0.5, "up_proj": torch.randn(I, H, generator=g) * H ** -0.5,
                  "down_proj": torch.randn(H, I, generator=g) * I ** -0.5}
            sh = {k: v.to(device) for k, v in sh.items()}
        em = None if expert_map is None else expert_map.to(device)
        return cls(cfg, w, gate.to(device), bias.to(device), sh, em, **kw)


def linear_weights(m: KimiMoE) -> loaders.NVFP4MoEWeights:
    """The module's experts in the linear (checkpoint) layout, whatever layout it runs."""
    w = loaders.NVFP4MoEWeights(m.w13, m.w13_scale, m.w13_alpha, m.w13_input_scale, m.w2, m.w2_scale, m.w2_alpha,
                                m.w2_input_scale)
    if m.weight_layout == "tiled":
        from .moe_gemm_prepare import untile_codes, untile_scales
        w.w13, w.w13_scale = untile_codes(w.w13), untile_scales(w.w13_scale)
        w.w2, w.w2_scale = untile_codes(w.w2), untile_scales(w.w2_scale)
    return w


def dequantized_experts(m: KimiMoE) -> tuple[torch.Tensor, torch.Tensor]:
    """(w13 [E, 2I, H], w2 [E, H, I]) fp32: the exact NVFP4 operands, for oracles and BF16 baselines."""
    w = linear_weights(m)
    w13 = torch.stack([nvfp4.dequantize(w.w13[e], w.w13_scale[e], w.w13_alpha[e]) for e in range(w.w13.shape[0])])
    w2 = torch.stack([nvfp4.dequantize(w.w2[e], w.w2_scale[e], w.w2_alpha[e]) for e in range(w.w2.shape[0])])
    return w13, w2
