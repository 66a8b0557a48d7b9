"""Benchmark moe_gemm (NVFP4 weights x BF16) on Kimi-K2 shapes vs torch._grouped_mm BF16, same process.

    python benchmarks/bench_moe_gemm.py [--quick] [--shapes gate_up,down] [--json out.json]

Method (/work/shared/docs/gpu.md): uniform top-8 routing over E = 384 experts, rows sorted by expert;
every timed call is a CUDA-graph replay preceded by READING a 256 MB buffer (evicts L2 without leaving
dirty lines); CUDA events around the replay only; median of the iterations. Bytes = weights + scales of
the experts with rows + activations + output; % is of the 4.2 TB/s copy ceiling; TFLOP/s = 2 M N K / t.
Columns: us = weights prepared once by prepare_moe_gemm_weights (scale_layout="tiled"), default kernel
choice (bulk-copy decode kernel for 8-token passes on sm_90+); forced on the tiled layout (T < 256):
persist_us = the persistent cp.async kernel, t4_us / t8_us = the bulk kernel with 4- / 8-token passes; raw_us = the
checkpoint layout (linear scales) as is, default choice (persistent streaming kernel for passes of <= 32
tokens, the tile kernel above a mean of 24 rows per expert); forced, raw layout: pipe_us = the cp.async
pipelined streaming kernel, m64_us / m128_us = the tile kernel with 64- / 128-token tiles (T >= 256);
forced, tiled layout (T >= 256): tm128_us = the tile kernel with 128-token tiles, w64_us / w96_us /
w128_us = the sm_90a wgmma kernel with 64- / 96- / 128-token tiles (elsewhere: the default choice).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

import k2kernels  # noqa: F401  (defines torch.ops.k2kernels)
from k2kernels import autotune
from k2kernels.moe_gemm_prepare import prepare_moe_gemm_weights

SHAPES = {"gate_up": (4096, 7168), "down": (7168, 2048)}
E, TOPK = 384, 8
COPY_TBS = 4.2
VARIANT_COLUMNS = ("persist_us", "t4_us", "t8_us", "raw_us", "pipe_us", "m64_us", "m128_us", "tm128_us", "w64_us",
                   "w96_us", "w128_us")
BF16_TFLOPS = 767.0


def routing(T, device):
    ids = torch.rand(T, E, device=device).topk(TOPK, dim=1).indices
    counts = torch.bincount(ids.flatten(), minlength=E)
    offsets = torch.zeros(E + 1, dtype=torch.int32, device=device)
    offsets[1:] = counts.cumsum(0).to(torch.int32)
    return counts, offsets


def time_graph(fn, flush, iters):
    fn()                                       # warm-up / JIT / autotune outside the graph
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(iters + 2):
        flush.sum()                            # read 256 MB: L2 holds nothing of ours afterwards
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    return statistics.median(times[2:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="T in {1, 16, 64, 4096} only")
    ap.add_argument("--shapes", default="gate_up,down")
    ap.add_argument("--tokens", default=None, help="comma-separated T values (overrides --quick)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "bench_moe_gemm.json"))
    args = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    Ts = [1, 16, 64, 4096] if args.quick else [1, 4, 16, 64, 256, 1024, 4096, 16384]
    if args.tokens:
        Ts = [int(t) for t in args.tokens.split(",")]
    flush = torch.ones(64 * 1024 * 1024, dtype=torch.float32, device=dev)
    print(f"# {torch.cuda.get_device_name()}  torch {torch.__version__}  E={E} top-{TOPK}")
    print(f"{'shape':8} {'T':>6} {'M':>7} {'act':>4} {'us':>9} {'TB/s':>6} {'%copy':>6} {'TFLOP/s':>8} "
          f"{'torch_us':>9} {'torchTF':>8} {'speedup':>7} " + " ".join(f"{c:>8}" for c in VARIANT_COLUMNS))
    results = []
    for name in args.shapes.split(","):
        N, K = SHAPES[name]
        w = torch.randint(0, 256, (E, N, K // 2), dtype=torch.uint8, device=dev)
        mag = torch.randint(0x20, 0x50, (E, N, K // 16), dtype=torch.uint8, device=dev)
        s = mag.view(torch.float8_e4m3fn)
        alpha = torch.full((E,), 1e-3, device=dev)
        wt, st = prepare_moe_gemm_weights(w, s)
        wb = None if args.no_peer else torch.randn(E, N, K, device=dev, dtype=torch.bfloat16)
        for T in Ts:
            counts, offsets = routing(T, dev)
            M = T * TOPK
            a = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            active = int((counts > 0).sum())
            nbytes = active * (N * K // 2 + N * K // 16) + M * K * 2 + M * N * 2
            flops = 2.0 * M * N * K
            iters = args.iters if T < 4096 else max(5, args.iters // 4)
            def timed(env, tiled=False):
                """Graph-replay time with the knobs `env` set while capturing (the launcher reads them)."""
                with autotune.knobs({"knobs": env}):
                    if tiled:
                        return time_graph(lambda: torch.ops.k2kernels.moe_gemm(a, wt, st, alpha, offsets, "bf16", None,
                                                                                 "tiled"), flush, iters)
                    return time_graph(lambda: torch.ops.k2kernels.moe_gemm(a, w, s, alpha, offsets), flush, iters)

            nan = float("nan")
            prefill = T >= 256
            us = timed({}, tiled=True)
            row = dict(
                persist_us=timed({"K2K_MOE_GEMM_KERNEL": "persist"}, tiled=True) if not prefill else nan,
                t4_us=timed({"K2K_MOE_GEMM_KERNEL": "bulk", "K2K_MOE_GEMM_CFG": "t4"}, tiled=True) if not prefill else nan,
                t8_us=timed({"K2K_MOE_GEMM_KERNEL": "bulk", "K2K_MOE_GEMM_CFG": "t8"}, tiled=True) if not prefill else nan,
                raw_us=timed({}),
                pipe_us=timed({"K2K_MOE_GEMM_KERNEL": "pipe"}),
                m64_us=timed({"K2K_MOE_GEMM_KERNEL": "tile", "K2K_MOE_GEMM_CFG": "m64"}) if prefill else nan,
                m128_us=timed({"K2K_MOE_GEMM_KERNEL": "tile", "K2K_MOE_GEMM_CFG": "m128"}) if prefill else nan,
                # the tiled layout: the portable tile kernel, and the sm_90a wgmma kernel at each token tile
                tm128_us=timed({"K2K_MOE_GEMM_KERNEL": "tile", "K2K_MOE_GEMM_CFG": "m128"}, tiled=True) if prefill else nan,
                **{f"w{t}_us": timed({"K2K_MOE_GEMM_KERNEL": "wgmma", "K2K_MOE_GEMM_CFG": f"w{t}"}, tiled=True)
                   if prefill else nan for t in (64, 96, 128)},
                shape=name, N=N, K=K, T=T, M=M, active=active, us=us, tbs=nbytes / us / 1e6,
                pct_copy=100 * nbytes / us / 1e6 / COPY_TBS, tflops=flops / us / 1e6)
            if wb is not None:
                ends = offsets[1:].contiguous()
                bt = wb.transpose(1, 2)
                tus = time_graph(lambda: torch._grouped_mm(a, bt, offs=ends), flush, iters)
                row.update(torch_us=tus, torch_tflops=flops / tus / 1e6, speedup=tus / us)
            results.append(row)
            print(f"{name:8} {T:6d} {M:7d} {active:4d} {us:9.1f} {row['tbs']:6.2f} {row['pct_copy']:6.1f} "
                  f"{row['tflops']:8.1f} {row.get('torch_us', float('nan')):9.1f} "
                  f"{row.get('torch_tflops', float('nan')):8.1f} {row.get('speedup', float('nan')):7.2f} "
                  + " ".join(f"{row[c]:8.1f}" for c in VARIANT_COLUMNS), flush=True)
            del a
        del w, s, wb, wt, st
        torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
