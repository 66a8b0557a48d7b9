"""One moe_gemm shape called a few times, for a profiler (Nsight Compute) to pick a launch from.

    ncu --launch-skip 3 --launch-count 1 -k regex:moe_gemm python3 benchmarks/profile_moe_gemm.py --T 1 --shape gate_up

Kimi-K2 shapes, E = 384, uniform top-8 routing (benchmarks/bench_moe_gemm.py's method), random NVFP4
codes and scales; --layout linear (checkpoint) or tiled (prepare_moe_gemm_weights). Knobs such as
K2K_MOE_GEMM_KERNEL / K2K_MOE_GEMM_CFG apply as usual.
"""
import argparse

import torch

import k2kernels  # noqa: F401  (defines torch.ops.k2kernels)
from k2kernels.moe_gemm_prepare import prepare_moe_gemm_weights

SHAPES = {"gate_up": (4096, 7168), "down": (7168, 2048)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=1)
    ap.add_argument("--shape", default="gate_up", choices=sorted(SHAPES))
    ap.add_argument("--layout", default="linear", choices=["linear", "tiled"])
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    E, N, K = 384, *SHAPES[args.shape]
    w = torch.randint(0, 256, (E, N, K // 2), dtype=torch.uint8, device="cuda")
    s = torch.randint(0x20, 0x50, (E, N, K // 16), dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    if args.layout == "tiled":
        w, s = prepare_moe_gemm_weights(w, s)
    alpha = torch.full((E,), 1e-3, device="cuda")
    ids = torch.rand(args.T, E, device="cuda").topk(8, dim=1).indices
    offsets = torch.zeros(E + 1, dtype=torch.int32, device="cuda")
    offsets[1:] = torch.bincount(ids.flatten(), minlength=E).cumsum(0).to(torch.int32)
    a = torch.randn(8 * args.T, K, device="cuda", dtype=torch.bfloat16)
    for _ in range(args.calls):
        torch.ops.k2kernels.moe_gemm(a, w, s, alpha, offsets, "bf16", None, args.layout)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
