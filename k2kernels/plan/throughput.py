"""Decode tok/s bounds: weight + KV bytes per step over memory bandwidth, plus interconnect.

Decode is memory-bound: a step must stream every weight byte its tokens touch and the KV cache
of every sequence. Two numbers per plan:
  bound    = bandwidth only, perfect overlap of memory and link traffic, no latency (an upper bound
             no implementation can beat on this hardware);
  estimate = memory time at the measured (or 0.9 x datasheet) bandwidth + link time + one fixed
             latency per collective, no overlap (closer to what a plain NCCL engine sees at batch 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

from .memory import (Parallelism, attention_params_per_rank, expert_bytes, expert_params,
                     kv_bytes_per_token_per_layer, norm_params_per_layer, stage_layers)
from .presets import GB, WEIGHT_BITS, GpuPreset, ModelPreset

# Ratio measured / datasheet on the one GPU we measured (H200: 4.27 / 4.8 TB/s, docs/gpu.md);
# used for GPUs without a measurement. Assumption.
UNMEASURED_BW_FRACTION = 0.9
ACT_BYTES = 2  # hidden states travel in bf16


def distinct_experts(experts: int, top_k: int, tokens: float) -> float:
    """Expected number of distinct experts touched by `tokens` tokens, each picking top_k of
    `experts` uniformly (real routing is skewed, which touches fewer: this is the pessimistic side
    for memory traffic)."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


@dataclass
class DecodeEstimate:
    batch: int
    context: int
    weight_gb_per_step_per_gpu: float
    kv_gb_per_step_per_gpu: float
    link_mb_per_step_per_gpu: float
    collectives_per_step: int
    mem_ms: float
    link_ms: float
    latency_ms: float
    bound_tok_s: float
    estimate_tok_s: float
    link: str

    def as_dict(self) -> dict:
        return asdict(self)


def _stage_step(m, par, *, experts, weights, dense, kv, context, tokens):
    """Bytes and times of one stage processing one microbatch of `tokens` decode tokens."""
    tp = par.tp
    u = distinct_experts(experts, m.top_k, tokens)
    per_layer_experts = (u / par.ep if par.ep > 1 else u / tp) * expert_bytes(m, weights)
    dense_b = WEIGHT_BITS[dense] / 8
    per_layer_attn = attention_params_per_rank(m, tp) * dense_b
    per_moe_layer_other = (m.shared_experts * expert_params(m) / tp * dense_b
                           + experts * m.hidden * 2)                      # router gate, bf16
    per_dense_layer_mlp = 3 * m.hidden * m.dense_inter / tp * dense_b
    kv_tok_layer = kv_bytes_per_token_per_layer(m, kv, tp)
    h_bytes = tokens * m.hidden * ACT_BYTES
    ring = 2 * (tp - 1) / tp                       # bytes each GPU sends per all-reduce byte
    a2a_tokens = math.ceil(tokens / par.ep) if par.ep > 1 else 0
    a2a = a2a_tokens * m.top_k * (par.ep - 1) / max(par.ep, 1) * m.hidden * ACT_BYTES

    res = []
    stages = stage_layers(m, par.pp)
    for s, rng in enumerate(stages):
        n_layers = len(rng)
        n_moe = sum(1 for i in rng if i >= m.first_dense_layers)
        w = (n_layers * (per_layer_attn + norm_params_per_layer(m) * 2)
             + n_moe * (per_layer_experts + per_moe_layer_other)
             + (n_layers - n_moe) * per_dense_layer_mlp)
        if s == len(stages) - 1:
            w += m.vocab * m.hidden / tp * 2                               # lm_head slice, bf16
        kvb = tokens * context * n_layers * kv_tok_layer
        link_bytes, n_coll = 0.0, 0
        if tp > 1:
            if par.ep > 1:   # attention all-reduce + MoE dispatch and combine all-to-all
                link_bytes += n_layers * ring * h_bytes + n_moe * 2 * a2a
                n_coll += n_layers + 2 * n_moe
            else:            # all-reduce after attention and after the MLP/MoE
                link_bytes += 2 * n_layers * ring * h_bytes
                n_coll += 2 * n_layers
        if s < len(stages) - 1:   # send activations to the next stage
            link_bytes += h_bytes
            n_coll += 1
        res.append((w, kvb, link_bytes, n_coll))
    return res


def decode_estimate(m: ModelPreset, par: Parallelism, gpu: GpuPreset, *, experts: int,
                    weights: str, dense: str, kv: str, context: int, batch: int,
                    link_efficiency: float, latency_us: float) -> DecodeEstimate:
    par.check()
    # With batch >= pp, the batch splits into pp microbatches that keep all stages busy;
    # otherwise one microbatch walks the stages one after the other.
    micro = par.pp if batch >= par.pp else 1
    tokens = batch / micro
    stages = _stage_step(m, par, experts=experts, weights=weights, dense=dense, kv=kv,
                         context=context, tokens=tokens)
    bw_spec = gpu.mem_bw_gbs * GB
    bw_real = (gpu.mem_bw_measured_gbs or gpu.mem_bw_gbs * UNMEASURED_BW_FRACTION) * GB
    link_bw = gpu.link_gbs_per_dir * GB * link_efficiency

    def step_time(bound: bool) -> float:
        per_stage = []
        for w, kvb, lb, nc in stages:
            t_mem = (w + kvb) / (bw_spec if bound else bw_real)
            t_link = lb / (gpu.link_gbs_per_dir * GB if bound else link_bw)
            per_stage.append(max(t_mem, t_link) if bound else t_mem + t_link + nc * latency_us * 1e-6)
        return micro * max(per_stage) if micro > 1 else sum(per_stage)

    t_bound, t_est = step_time(True), step_time(False)

    def path(values) -> float:
        """Sum along the critical path: all stages in turn (one microbatch) or micro x slowest."""
        return micro * max(values) if micro > 1 else sum(values)

    busiest = max(stages, key=lambda st: st[0] + st[1])
    n_coll = int(path([nc for *_, nc in stages]))
    return DecodeEstimate(
        batch=batch, context=context,
        weight_gb_per_step_per_gpu=micro * busiest[0] / GB,
        kv_gb_per_step_per_gpu=micro * busiest[1] / GB,
        link_mb_per_step_per_gpu=micro * max(lb for _, _, lb, _ in stages) / 1e6,
        collectives_per_step=n_coll,
        mem_ms=path([(w + k) / bw_real for w, k, _, _ in stages]) * 1e3,
        link_ms=path([lb / link_bw for _, _, lb, _ in stages]) * 1e3,
        latency_ms=n_coll * latency_us * 1e-3,
        bound_tok_s=batch / t_bound, estimate_tok_s=batch / t_est, link=gpu.link,
    )
