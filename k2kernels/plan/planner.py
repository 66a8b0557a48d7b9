"""Assemble a deployment plan: the candidate parallel layouts for N GPUs, their per-GPU memory
and decode bounds, as one plain dict (the CLI prints it as a table or as JSON)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .memory import (Parallelism, active_params, expert_bytes, kv_bytes_per_token,
                     model_params, per_gpu_memory)
from .presets import DEFAULTS, GB, GPUS, MODELS, WEIGHT_BITS, ModelPreset
from .throughput import UNMEASURED_BW_FRACTION, decode_estimate


@dataclass
class PlanRequest:
    model: str = "k2.6"
    gpu: str = "rtx-pro-6000"
    gpus: int = 4
    experts: int | None = None          # None: the model's own count
    weights: str = "nvfp4"              # routed experts
    dense: str = "bf16"                 # attention, shared expert, dense MLP
    kv: str = "fp8"
    context: int = 8192
    batch: int = 1
    tp: int | None = None
    pp: int | None = None
    ep: int | None = None
    kv_heads: int | None = None         # GQA override
    head_dim: int | None = None
    overhead_gb: float = DEFAULTS["overhead_gb"]
    prefill_chunk: int = DEFAULTS["prefill_chunk"]
    link_efficiency: float = DEFAULTS["link_efficiency"]
    latency_us: float | None = None     # None: per-link default


def resolve_model(req: PlanRequest) -> ModelPreset:
    m = MODELS[req.model]
    if m.attention == "gqa" and (req.kv_heads or req.head_dim):
        m = replace(m, kv_heads=req.kv_heads or m.kv_heads, head_dim=req.head_dim or m.head_dim)
    return m


def candidate_layouts(req: PlanRequest) -> list[Parallelism]:
    """The user's layout if given, else TP=N, every TP x PP split of N, and EP=N."""
    if req.tp or req.pp or req.ep:
        tp = req.tp or max(1, req.gpus // (req.pp or 1))
        pp = req.pp or max(1, req.gpus // tp)
        ep = req.ep or 1
        par = Parallelism(tp, pp, ep)
        par.check()
        if par.gpus != req.gpus:
            raise ValueError(f"tp x pp = {par.gpus} GPUs, but --gpus is {req.gpus}")
        return [par]
    n = req.gpus
    out = [Parallelism(n, 1, 1)]
    out += [Parallelism(n // p, p, 1) for p in range(2, n + 1) if n % p == 0]
    if n > 1:
        out.append(Parallelism(n, 1, n))
    return out


def evaluate(req: PlanRequest, par: Parallelism, m: ModelPreset | None = None) -> dict:
    m = m or resolve_model(req)
    gpu = GPUS[req.gpu]
    experts = req.experts or m.experts
    stages = per_gpu_memory(m, par, experts=experts, weights=req.weights, dense=req.dense,
                            kv=req.kv, context=req.context, batch=req.batch,
                            capacity_gb=gpu.capacity_gb, overhead_gb=req.overhead_gb,
                            prefill_chunk=req.prefill_chunk)
    worst = max(stages, key=lambda s: s.total_gb)
    latency = req.latency_us if req.latency_us is not None else DEFAULTS["collective_latency_us"][gpu.link]
    dec = decode_estimate(m, par, gpu, experts=experts, weights=req.weights, dense=req.dense,
                          kv=req.kv, context=req.context, batch=req.batch,
                          link_efficiency=req.link_efficiency, latency_us=latency)
    return {
        "layout": par.label, "tp": par.tp, "pp": par.pp, "ep": par.ep,
        "fits": all(s.fits for s in stages),
        "worst_stage": worst.as_dict(),
        "stages": [s.as_dict() for s in stages],
        "max_kv_tokens": min(s.max_kv_tokens for s in stages),
        "decode": dec.as_dict(),
    }


def assumptions(req: PlanRequest, m: ModelPreset) -> list[str]:
    gpu = GPUS[req.gpu]
    lat = req.latency_us if req.latency_us is not None else DEFAULTS["collective_latency_us"][gpu.link]
    out = [
        f"model {m.name}: {m.source}",
        *[f"model {m.name}: {a}" for a in m.assumptions],
        f"routed experts {req.weights} = {WEIGHT_BITS[req.weights]:.4g} bits/weight incl. block scales",
        f"attention, shared expert, dense MLP in {req.dense}; embeddings, lm_head, router, norms in bf16",
        "TP: every GPU holds 1/tp of every expert and of attention/dense (vocab-parallel embedding);"
        " MLA q_a/kv_a projections and the router are replicated",
        "PP: contiguous layer ranges, earlier stages take the remainder; stage 0 has the embedding,"
        " the last stage the lm_head",
        "EP: experts partitioned ceil(E/ep) per GPU, attention/dense TP over the same GPUs;"
        " MoE traffic modelled as all-to-all dispatch + combine of top_k bf16 hidden states",
        ("KV: MLA caches kv_lora+rope per token per layer, a full copy on every TP rank"
         if m.attention == "mla" else
         "KV: GQA caches K and V per KV head; heads split over TP (replicated if tp > kv_heads)"),
        f"capacity = nvidia-smi memory.total ({gpu.capacity_mib} MiB = {gpu.capacity_gb:.2f} GB);"
        f" overhead {req.overhead_gb} GB/GPU for CUDA context, NCCL/cuBLAS workspaces (assumption)",
        f"activations: a {req.prefill_chunk}-token prefill chunk (or the decode batch if larger)"
        " in bf16 plus fp32 logits for the batch",
        "decode bound: weights touched (distinct experts for uniform routing) + KV, over datasheet"
        " bandwidth, link traffic fully overlapped, no latency",
        f"decode estimate: measured bandwidth (or {UNMEASURED_BW_FRACTION} x datasheet) +"
        f" link at {req.link_efficiency} x datasheet + {lat} us per collective, no overlap (assumption)",
    ]
    if req.gpu == "rtx-5090":
        out.append("rtx-5090: GeForce has no GPU peer-to-peer; real NCCL traffic goes through host"
                   " memory and is slower than the PCIe figure used here")
    return out


def make_plan(req: PlanRequest) -> dict:
    from .seed_check import seed_checks   # local import: seed_check builds its own requests
    m = resolve_model(req)
    gpu = GPUS[req.gpu]
    experts = req.experts or m.experts
    params = model_params(m, experts)
    return {
        "request": vars(req).copy(),
        "model": {
            "name": m.name, "hidden": m.hidden, "moe_inter": m.moe_inter, "layers": m.layers,
            "moe_layers": m.moe_layers, "experts": experts, "top_k": m.top_k,
            "attention": m.attention,
            "expert_bytes_per_layer": expert_bytes(m, req.weights),
            "expert_gb_all_layers": expert_bytes(m, req.weights) * m.moe_layers / GB,
            "routed_experts_gb": expert_bytes(m, req.weights) * m.moe_layers * experts / GB,
            "total_params_b": params["total"] / 1e9,
            "active_params_b": active_params(m) / 1e9,
            "kv_bytes_per_token": kv_bytes_per_token(m, req.kv),
        },
        "gpu": {"name": gpu.name, "capacity_gb": gpu.capacity_gb, "mem_bw_gbs": gpu.mem_bw_gbs,
                "link": gpu.link, "link_gbs_per_dir": gpu.link_gbs_per_dir, "source": gpu.source},
        "assumptions": assumptions(req, m),
        "plans": [evaluate(req, par, m) for par in candidate_layouts(req)],
        "seed_checks": seed_checks(req),
    }
