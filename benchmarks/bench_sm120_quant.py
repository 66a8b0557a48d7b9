"""Benchmark of quantize_nvfp4_experts (the SM120 W4A4 path's activation quantization) on the H200.

Kimi-K2 shapes: E=384 experts, top-8 routing, gate_up input K=7168 and down input K=2048.
Peer in the same process: the existing quantize_nvfp4 kernel on the same M x K (linear scales, no
per-expert blocks, no gather) -- the floor for a kernel that reads the same bf16 rows.
Timing: CUDA-graph replay of the op alone, L2 evicted before every replay by READING a 256 MB
buffer, median of 50. Bytes = bf16 read + packed write + scale-buffer write (incl. zero padding).
Writes a JSON next to the table when $OUT is set.
"""
from __future__ import annotations

import json
import os
import statistics

import torch

import k2kernels  # noqa: F401  (defines the ops)

E, TOPK = 384, 8
CASES = [(1, 7168), (64, 7168), (4096, 7168), (1, 2048), (4096, 2048)]   # (tokens T, K); M = T * top-k


def routed_offsets(T: int, device) -> torch.Tensor:
    ids = torch.stack([torch.randperm(E, device=device)[:TOPK] for _ in range(T)]).flatten()
    counts = torch.bincount(ids, minlength=E)
    return torch.cat([torch.zeros(1, dtype=torch.int64, device=device), counts.cumsum(0)]).to(torch.int32)


def time_graph(fn, flush, reps=50):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        flush.sum()                  # read 256 MB: evicts L2 without leaving dirty lines
        start.record()
        g.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def main():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    flush = torch.ones(256 << 20, dtype=torch.uint8, device=dev)
    rows = []
    print(f"GPU: {torch.cuda.get_device_name()}  (E={E}, top-{TOPK}; us = median CUDA-graph replay, L2 evicted)")
    print(f"{'T':>5} {'K':>5} {'M':>6} | {'experts us':>10} {'GB/s':>7} {'%4.2TB/s':>8} | {'+gather us':>10} | "
          f"{'peer quantize_nvfp4 us':>22} {'%4.2TB/s':>8} | ratio")
    for T, K in CASES:
        M = T * TOPK
        x = torch.randn(M, K, device=dev).to(torch.bfloat16)
        offsets = routed_offsets(T, dev)
        gs = torch.rand(E, device=dev) * 0.01 + 1e-3
        idx = torch.randperm(M, device=dev).to(torch.int32)
        op = torch.ops.k2kernels.quantize_nvfp4_experts
        q, sf, so = op(x, gs, offsets, None)
        nbytes = M * K * 2 + M * K // 2 + sf.numel()
        t_exp = time_graph(lambda: op(x, gs, offsets, None), flush)
        t_gather = time_graph(lambda: op(x, gs, offsets, idx), flush)
        g1 = gs[:1].clone()
        t_peer = time_graph(lambda: torch.ops.k2kernels.quantize_nvfp4(x, g1), flush)
        peer_bytes = M * K * 2 + M * K // 2 + M * K // 16
        r = dict(T=T, K=K, M=M, sf_bytes=sf.numel(), experts_us=t_exp, gather_us=t_gather, peer_us=t_peer,
                 experts_gbps=nbytes / t_exp / 1e3, peer_gbps=peer_bytes / t_peer / 1e3)
        rows.append(r)
        print(f"{T:>5} {K:>5} {M:>6} | {t_exp:>10.2f} {r['experts_gbps']:>7.0f} {r['experts_gbps'] / 42:>7.1f}% | "
              f"{t_gather:>10.2f} | {t_peer:>22.2f} {r['peer_gbps'] / 42:>7.1f}% | {t_exp / t_peer:.2f}x")
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "bench_sm120_quant.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
