"""Decode (T = 1) the way an engine runs it: many MoE layers back to back in ONE CUDA graph, per layer.

    python benchmarks/bench_decode_layers.py [--iters 10] [--no-peer] [--json out.json]
    python benchmarks/bench_decode_layers.py --smoke          (CPU, tiny shapes, no timing)

Why: bench_moe_gemm.py and bench_fused_moe.py time ONE call between L2 flushes, so each number carries a
whole launch (~3-4 us from the CUDA event to the first CTA on the H200; benchmarks/RESULTS.md, fifth
session) on an idle GPU. An engine replays one graph of ~60 MoE layers per token: each launch overlaps
the kernel before it, and every layer's weights are new to L2.
Method: one set of E = 384 experts (Kimi-K2 shapes, NVFP4, tiled layout); layer l routes its token to
experts [8 l, 8 l + 8), so 48 layers touch 48 disjoint sets and no weight byte is read twice in the
graph (8 experts' gate_up + down = 176 MB per layer, L2 is 50 MB). The graph of all layers is replayed
after READING a 256 MB buffer (as the other benchmarks); per layer = replay time / layers, median over
--iters replays. The same layer timed alone (a one-layer graph, flushed) is printed beside it. Each
layer takes the same input x (no data dependency between layers: the stream still runs them in order,
and programmatic dependent launch overlaps kernels whatever the data).
Rows: moe_gemm gate_up and down (8 rows, one per expert), fused_moe (router logits steer layer l to
its experts: +10 on them), and the BF16 peers timed the same way: torch._grouped_mm per GEMM and the
torch composite of bench_fused_moe.py. Floor = the NVFP4 bytes (codes + e4m3 scales) a layer must read
/ 4.2 TB/s.
Status: written in the ninth session after its device time was spent; run on CPU only (--smoke, in
tests/test_bench_smoke.py), never on a GPU yet.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_fused_moe as F  # noqa: E402  (Kimi shapes, weights, the BF16 torch composite)

import k2kernels  # noqa: E402
from k2kernels.reference.fused_moe import workspace_bytes  # noqa: E402


def in_order(fns):
    """One callable that runs every fn in order (F.timed captures it as one CUDA graph)."""
    return lambda: [fn() for fn in fns]


def one_row_per_expert(first, n, E, dev):
    """expert_offsets of n rows, row j on expert first + j."""
    counts = torch.zeros(E, dtype=torch.int32, device=dev)
    counts[first:first + n] = 1
    offsets = torch.zeros(E + 1, dtype=torch.int32, device=dev)
    offsets[1:] = counts.cumsum(0)
    return offsets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, no timing: checks the script runs")
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "bench_decode_layers.json"))
    args = ap.parse_args(argv)
    dev = "cuda"
    if args.smoke:                                 # the same tiny config as bench_fused_moe.py --smoke
        dev, F.H, F.I, F.E, F.TOPK = "cpu", 1024, 512, 16, 4
    H, I, E, K8 = F.H, F.I, F.E, F.TOPK
    layers = E // K8                               # disjoint expert sets
    torch.manual_seed(0)
    k2kernels.load_kernels()
    gpu = torch.cuda.get_device_name() if dev == "cuda" else "CPU smoke run (no timing)"
    print(f"# {gpu}  torch {torch.__version__}  H={H} I={I} E={E} top-{K8}, {layers} layers of disjoint experts",
          flush=True)
    from k2kernels.moe_gemm_prepare import prepare_moe_gemm_weights
    w13, s13, a13, w2, s2, a2 = F.nvfp4_weights(dev)
    t13, t2 = prepare_moe_gemm_weights(w13, s13), prepare_moe_gemm_weights(w2, s2)
    w_tiled = (t13[0], t13[1], a13, t2[0], t2[1], a2)
    del w13, s13, w2, s2
    flush = torch.ones(64 * 1024 * 1024, dtype=torch.float32, device=dev) if dev == "cuda" else None
    ops = torch.ops.k2kernels

    # per-layer inputs: 8 rows on experts [8 l, 8 l + 8); router logits steering to them
    offsets = [one_row_per_expert(l * K8, K8, E, dev) for l in range(layers)]
    x = (torch.randn(1, H, device=dev) * 0.5).to(torch.bfloat16)
    a_up = (torch.randn(K8, H, device=dev) * 0.5).to(torch.bfloat16)
    a_down = (torch.randn(K8, I, device=dev) * 0.5).to(torch.bfloat16)
    bias = torch.randn(E, device=dev) * 0.01
    logits = []
    for l in range(layers):
        lg = torch.randn(1, E, device=dev) * 0.01
        lg[:, l * K8:(l + 1) * K8] += 10.0
        logits.append(lg)
    for l in (0, layers - 1):                      # the steering works: layer l's router picks its experts
        ids = ops.topk_router(logits[l], bias, K8, "sigmoid", 1, 1, True, F.RSF)[1]
        assert sorted(ids.flatten().tolist()) == list(range(l * K8, (l + 1) * K8)), (l, ids)
    ws = torch.empty(workspace_bytes(1, H, I, K8), dtype=torch.uint8, device=dev)

    def up(l):
        return lambda: ops.moe_gemm(a_up, w_tiled[0], w_tiled[1], w_tiled[2], offsets[l], "bf16", None, "tiled")

    def down(l):
        return lambda: ops.moe_gemm(a_down, w_tiled[3], w_tiled[4], w_tiled[5], offsets[l], "bf16", None, "tiled")

    def fused(l):
        return lambda: k2kernels.ops.fused_moe(x, logits[l], *w_tiled, K8, e_bias=bias, routed_scaling_factor=F.RSF,
                                               scale_layout="tiled", workspace=ws)

    bytes_up = K8 * (2 * I * H // 2 + 2 * I * H // 16)
    bytes_down = K8 * (H * I // 2 + H * I // 16)
    cases = [("moe_gemm gate_up", up, bytes_up), ("moe_gemm down", down, bytes_down),
             ("fused_moe", fused, bytes_up + bytes_down)]
    if not args.no_peer:
        # BF16 peer weights in _grouped_mm's [E, K, N] view (values need not match ours)
        w13t = torch.randn(E, 2 * I, H, device=dev, dtype=torch.bfloat16).mul_(H ** -0.5).transpose(1, 2)
        w2t = torch.randn(E, H, I, device=dev, dtype=torch.bfloat16).mul_(I ** -0.5).transpose(1, 2)
        ends = [o[1:].contiguous() for o in offsets]

        def torch_up(l):
            return lambda: torch._grouped_mm(a_up, w13t, offs=ends[l])

        def torch_down(l):
            return lambda: torch._grouped_mm(a_down, w2t, offs=ends[l])

        def torch_layer(l):
            return lambda: F.torch_moe(x, logits[l], bias, w13t, w2t)

        cases += [("torch._grouped_mm gate_up (BF16)", torch_up, bytes_up), ("torch._grouped_mm down (BF16)", torch_down,
                  bytes_down), ("torch composite (BF16)", torch_layer, bytes_up + bytes_down)]

    rows = []
    print(f"\n{'what (T = 1)':34s} {'alone us':>9s} {'per layer us':>12s} {'floor us':>8s} {'x floor':>7s} {'%copy':>6s}")
    for name, make, nbytes in cases:
        # F.timed: warm-up outside the graph, capture, L2 read before each replay, median (flush None: run once)
        alone = F.timed(make(0), flush, args.iters, graph=True)
        per_layer = F.timed(in_order([make(l) for l in range(layers)]), flush, args.iters, graph=True) / layers
        floor = nbytes / (F.COPY_BPS / 1e6)      # NVFP4 bytes (the peers read 3.6x as many BF16 bytes)
        rows.append(dict(what=name, alone_us=alone, per_layer_us=per_layer, layers=layers, floor_us=floor,
                         x_floor=per_layer / floor, pct_copy=100 * floor / per_layer))
        print(f"{name:34s} {alone:9.1f} {per_layer:12.1f} {floor:8.1f} {per_layer / floor:7.2f} "
              f"{100 * floor / per_layer:6.1f}", flush=True)
    if args.smoke:
        return 0
    with open(args.json, "w") as f:
        json.dump(dict(gpu=gpu, torch=torch.__version__, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
