"""CLI: python -m k2kernels.plan --model k2.6 --gpu rtx-pro-6000 --gpus 4 [...] [--json]"""
from __future__ import annotations

import argparse
import json
import sys

from .planner import PlanRequest, make_plan
from .presets import DEFAULTS, GPUS, KV_BYTES, MODELS, WEIGHT_BITS
from .report import render


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m k2kernels.plan",
        description="Per-GPU memory and decode bounds for Kimi-K2-class MoE models under TP, TP x PP and EP.")
    p.add_argument("--model", choices=sorted(MODELS), default="k2.6")
    p.add_argument("--gpu", choices=sorted(GPUS), default="rtx-pro-6000")
    p.add_argument("--gpus", type=int, default=4, help="number of GPUs")
    p.add_argument("--experts", type=int, default=None, help="routed experts kept (e.g. 256 after REAP)")
    p.add_argument("--weights", choices=sorted(WEIGHT_BITS), default="nvfp4", help="routed expert weights")
    p.add_argument("--dense", choices=sorted(WEIGHT_BITS), default="bf16",
                   help="attention, shared expert and dense MLP weights (embeddings/router stay bf16)")
    p.add_argument("--kv", choices=sorted(KV_BYTES), default="fp8")
    p.add_argument("--context", type=int, default=8192, help="tokens of context per sequence")
    p.add_argument("--batch", type=int, default=1, help="concurrent sequences")
    p.add_argument("--tp", type=int, help="evaluate only this layout (with --pp/--ep)")
    p.add_argument("--pp", type=int)
    p.add_argument("--ep", type=int, help="1 or equal to --tp: experts split over the TP group")
    p.add_argument("--kv-heads", type=int, help="GQA KV heads (presets assume 8)")
    p.add_argument("--head-dim", type=int, help="GQA head dim (presets assume 128)")
    p.add_argument("--overhead-gb", type=float, default=DEFAULTS["overhead_gb"],
                   help="per-GPU CUDA context + library workspaces, GB")
    p.add_argument("--prefill-chunk", type=int, default=DEFAULTS["prefill_chunk"])
    p.add_argument("--link-efficiency", type=float, default=DEFAULTS["link_efficiency"])
    p.add_argument("--latency-us", type=float, help="per-collective latency (default: 25 PCIe, 8 NVLink)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    req = PlanRequest(model=a.model, gpu=a.gpu, gpus=a.gpus, experts=a.experts, weights=a.weights,
                      dense=a.dense, kv=a.kv, context=a.context, batch=a.batch, tp=a.tp, pp=a.pp,
                      ep=a.ep, kv_heads=a.kv_heads, head_dim=a.head_dim, overhead_gb=a.overhead_gb,
                      prefill_chunk=a.prefill_chunk, link_efficiency=a.link_efficiency,
                      latency_us=a.latency_us)
    try:
        plan = make_plan(req)
    except ValueError as e:
        print(f"k2kernels.plan: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=1) if a.json else render(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
