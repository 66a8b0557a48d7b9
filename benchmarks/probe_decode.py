"""Where decode time goes: moe_gemm time vs the number of active experts, and fused_moe's kernel timeline.

    python benchmarks/probe_decode.py [--experts 1,2,4,...] [--no-timeline]

1. moe_gemm (default kernel choice, tiled layout) with n experts of one row each, n swept: the intercept
   of time(n) is the fixed cost of a call (launch, prologue, first bytes), the slope the cost per expert;
   a jump where the work units (n x N/64) pass the resident CTA slots shows wave quantization.
   Timing as benchmarks/bench_moe_gemm.py (graph replay of one call, L2 evicted, median).
2. fused_moe at T=1 (tiled), one graph replay under torch.profiler: each kernel's duration and the gap
   before it, so the time outside the two GEMMs is attributed to kernels or to launch gaps.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import k2kernels  # noqa: F401  (defines torch.ops.k2kernels)
from k2kernels import autotune
from k2kernels.moe_gemm_prepare import prepare_moe_gemm_weights
from k2kernels.reference.fused_moe import workspace_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_moe_gemm import SHAPES, time_graph  # noqa: E402

E = 384


def experts_sweep(ns, flush, iters):
    print("# moe_gemm, n experts x 1 row, tiled layout, default kernel")
    print(f"{'shape':8} {'n':>3} {'units':>6} {'us':>8} {'MB':>7} {'TB/s':>6}")
    for shape, (N, K) in SHAPES.items():
        _, w, s, alpha, _ = autotune.random_moe_operands(E, N, K, 0)
        w, s = prepare_moe_gemm_weights(w, s)
        for n in ns:
            experts = torch.randperm(E, device="cuda")[:n].sort().values
            counts = torch.zeros(E, dtype=torch.int32, device="cuda")
            counts[experts] = 1
            offsets = torch.zeros(E + 1, dtype=torch.int32, device="cuda")
            offsets[1:] = counts.cumsum(0).to(torch.int32)
            a = torch.randn(n, K, device="cuda", dtype=torch.bfloat16)
            us = time_graph(lambda: torch.ops.k2kernels.moe_gemm(a, w, s, alpha, offsets, "bf16", None, "tiled"),
                            flush, iters)
            mb = n * N * K * (0.5 + 1 / 16) / 1e6
            print(f"{shape:8} {n:3d} {n * N // 64:6d} {us:8.1f} {mb:7.1f} {mb / us:6.2f}")
        del w, s


def fused_timeline(flush):
    from torch.profiler import ProfilerActivity, profile

    import bench_fused_moe as bf
    dev = "cuda"
    w = bf.nvfp4_weights(dev)
    t13, t2 = prepare_moe_gemm_weights(w[0], w[1]), prepare_moe_gemm_weights(w[3], w[4])
    wt = (t13[0], t13[1], w[2], t2[0], t2[1], w[5])
    x = (torch.randn(1, bf.H, device=dev) * 0.5).to(torch.bfloat16)
    logits = torch.randn(1, bf.E, device=dev)
    bias = torch.randn(bf.E, device=dev) * 0.01
    ws = torch.empty(workspace_bytes(1, bf.H, bf.I, bf.TOPK), dtype=torch.uint8, device=dev)
    fn = lambda: k2kernels.ops.fused_moe(x, logits, *wt, bf.TOPK, e_bias=bias, routed_scaling_factor=bf.RSF,
                                         scale_layout="tiled", workspace=ws)
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    for rep in range(3):
        flush.sum()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            g.replay()
            torch.cuda.synchronize()
        kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda e: e.time_range.start)   # the flush ran before the profiler started
        if not kernels:
            print("# no kernel events recorded")
            return
        t0 = kernels[0].time_range.start
        print(f"# fused_moe T=1 tiled, graph replay {rep}: kernel, start, duration, gap before (us)")
        prev_end = t0
        for e in kernels:
            st, en = e.time_range.start, e.time_range.end
            print(f"  {e.name[:60]:60} {st - t0:7.1f} {en - st:7.1f} {st - prev_end:6.1f}")
            prev_end = en
        print(f"  first start to last end: {prev_end - t0:.1f} us")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", default="1,2,4,6,8,9,10,12,16")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--no-timeline", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    flush = torch.ones(64 * 1024 * 1024, dtype=torch.float32, device="cuda")
    one = torch.zeros(1, device="cuda")
    print(f"# {torch.cuda.get_device_name()}; 1-element add_ in a graph, L2 evicted: "
          f"{time_graph(lambda: one.add_(1), flush, args.iters):.2f} us")
    experts_sweep([int(n) for n in args.experts.split(",")], flush, args.iters)
    if not args.no_timeline:
        fused_timeline(flush)


if __name__ == "__main__":
    main()
