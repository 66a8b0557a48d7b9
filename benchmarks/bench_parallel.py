"""Multi-GPU MoE benchmark: TP and EP (k2kernels.parallel) vs the single-GPU layer, Kimi-K2 shapes.

NOT RUN ON GPUs YET: no multi-GPU machine was available when this was written (2026-11-29). It has
only been smoke-tested on CPU with gloo and the tiny preset (`--device cpu`), which exercises the
logic, not the timings. Run on a 2- or 4-GPU box:

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
    torchrun --standalone --nproc-per-node 4 benchmarks/bench_parallel.py --preset kimi-k2 \
        --tokens 1,8,64,4096 --out benchmarks/RESULTS_parallel_tp4.md

(The multicast-off variables are also set by this script before NCCL starts: NVLink multicast can
take a shared host's GPUs out of service.)

Per token count T (per rank; TP ranks all see the same T tokens, EP ranks T tokens each) it reports,
as the MAX over ranks of each rank's median:
  - single: moe_forward on the whole layer on one GPU (the peer, same process, rank 0's GPU);
  - tp:     tp_moe_forward (bf16 all-reduce), CUDA-graph replay for T <= 64;
  - ep:     ep_moe_forward mode='exact' (one host sync: eager) and mode='padded' (graph for T <= 64),
            each without and with dedup (one row per (token, owner) instead of per pair);
  - comm:   the collectives alone with the same sizes (all-reduce of [T, H] bf16; the two
            all-to-alls of the EP dispatch), and their share of the forward's time;
  - bytes/token (TP: ring all-reduce 2(W-1)/W * H * 2 B; EP: rows this rank dispatches, counting
    rows that stay on the rank, x (dispatch + return) bytes per row; max over ranks);
  - weight-bytes floor: this rank's distinct active experts' NVFP4 bytes / 4.2 TB/s.
L2 is flushed before every timed call by reading a 256 MB buffer. Timings are CUDA events around
the call after a barrier; medians of --iters.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

for _k, _v in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(_k, _v)

import torch                      # noqa: E402
import torch.distributed as dist  # noqa: E402

from k2kernels import parallel as par                            # noqa: E402
from k2kernels.loaders import NVFP4MoEWeights                     # noqa: E402
from k2kernels.moe_layer import PRESETS, MoELayer, moe_forward    # noqa: E402

HBM_BPS = 4.2e12
GRAPH_MAX_T = 64


def random_layer(cfg, device, seed=0) -> MoELayer:
    """Random NVFP4 bytes (quantizing 384 x 4096 x 7168 weights would take minutes; the GEMM cost
    does not depend on the values). Identical on every rank (same seed)."""
    g = torch.Generator(device=device).manual_seed(seed)
    E, H, I = cfg.experts, cfg.hidden, cfg.inter

    def packed(N, K):
        return torch.randint(0, 256, (E, N, K // 2), generator=g, device=device, dtype=torch.uint8)

    def scales(N, K):      # magnitudes 2^-7..2^-1, random sign: finite, no NaN byte
        mag = torch.randint(0x08, 0x30, (E, N, K // 16), generator=g, device=device, dtype=torch.uint8)
        sign = torch.randint(0, 2, (E, N, K // 16), generator=g, device=device, dtype=torch.uint8) << 7
        return (mag | sign).view(torch.float8_e4m3fn)

    ones = torch.ones(E, device=device)
    w = NVFP4MoEWeights(packed(2 * I, H), scales(2 * I, H), ones * H ** -0.5, ones.clone(),
                        packed(H, I), scales(H, I), ones * I ** -0.5, ones.clone())
    gate = (torch.randn(E, H, generator=g, device=device) * H ** -0.5).to(torch.bfloat16)
    bias = torch.randn(E, generator=g, device=device) * 0.01
    return MoELayer(cfg, gate, bias, w)


class Bench:
    def __init__(self, device, iters, warmup):
        self.device, self.iters, self.warmup = device, iters, warmup
        self.cuda = device.type == "cuda"
        self.flush_buf = torch.ones(64 * 2 ** 20, dtype=torch.float32, device=device) if self.cuda else None

    def _flush(self):
        if self.cuda:
            self.flush_buf.sum()             # READ 256 MB > 60 MB L2

    def median_us(self, fn, graph=False, collective=True) -> float:
        """Median µs of fn() on this rank (graph: capture once, time replays)."""
        run = fn
        if graph and self.cuda:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            run = g.replay
        for _ in range(self.warmup):
            run()
        times = []
        for _ in range(self.iters):
            self._flush()
            if collective:
                dist.barrier()
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                run()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e3)
            else:
                t0 = time.perf_counter()
                run()
                times.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(times)


def max_over_ranks(v: float, device) -> float:
    t = torch.tensor([v], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def expert_bytes(cfg, world_tp=1) -> float:
    H, I = cfg.hidden, cfg.inter
    per = 2 * I * H // 2 + 2 * I * H // 16 + H * I // 2 + H * I // 16
    return per / world_tp


def active_experts(layer, x) -> torch.Tensor:
    _, ids = par.route(layer, x)
    return torch.unique(ids.long())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="kimi-k2", choices=sorted(PRESETS))
    ap.add_argument("--tokens", default="1,8,64,4096")
    ap.add_argument("--modes", default="tp,ep")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu = gloo smoke test")
    ap.add_argument("--out", default=None, help="append the markdown table to this file (rank 0)")
    args = ap.parse_args()

    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    cfg = PRESETS[args.preset]
    layer = random_layer(cfg, device)
    bench = Bench(device, args.iters, args.warmup)
    modes = args.modes.split(",")
    tp_layer = par.shard_tp_layer(layer, rank, world) if "tp" in modes else None
    ep_layer = par.EPLayer.from_layer(layer, rank, world) if "ep" in modes else None
    H, k = cfg.hidden, cfg.top_k
    rows = []
    for T in (int(t) for t in args.tokens.split(",")):
        g = torch.Generator(device=device).manual_seed(1000 + T)
        x_shared = torch.randn(T, H, generator=g, device=device).to(torch.bfloat16)     # TP: same on all ranks
        x_mine = torch.randn(T, H, generator=torch.Generator(device=device).manual_seed(rank * 7919 + T),
                             device=device).to(torch.bfloat16)                          # EP: per rank
        small = T <= GRAPH_MAX_T
        single = bench.median_us(lambda: moe_forward(layer, x_shared), graph=small, collective=False)
        single = max_over_ranks(single, device)
        n_act = active_experts(layer, x_shared).numel()
        floor_single = n_act * expert_bytes(cfg) / HBM_BPS * 1e6
        rows.append(("single", T, single, None, None, floor_single))
        if tp_layer is not None:
            tp = max_over_ranks(bench.median_us(lambda: par.tp_moe_forward(tp_layer, x_shared), graph=small), device)
            buf = torch.empty(T, H, dtype=torch.bfloat16, device=device)
            comm = max_over_ranks(bench.median_us(lambda: dist.all_reduce(buf), graph=small), device)
            bpt = 2 * (world - 1) / world * H * 2
            rows.append((f"tp{world}", T, tp, comm, bpt, n_act * expert_bytes(cfg, world) / HBM_BPS * 1e6))
        if ep_layer is not None:
            stats = {}
            par.ep_moe_forward(ep_layer, x_mine, stats=stats)
            ep_exact = max_over_ranks(bench.median_us(lambda: par.ep_moe_forward(ep_layer, x_mine)), device)
            cap = T * k
            ep_pad = max_over_ranks(bench.median_us(
                lambda: par.ep_moe_forward(ep_layer, x_mine, mode="padded", capacity=cap), graph=small), device)
            # communication alone: the padded mode's two equal-split all-to-alls (fixed sizes)
            sbuf = torch.empty(world * cap, H + 2, dtype=torch.bfloat16, device=device)
            rbuf = torch.empty_like(sbuf)
            ybuf = torch.empty(world * cap, H, dtype=torch.bfloat16, device=device)
            ybuf2 = torch.empty_like(ybuf)

            def a2a():
                dist.all_to_all_single(rbuf, sbuf)
                dist.all_to_all_single(ybuf2, ybuf)
            comm = max_over_ranks(bench.median_us(a2a, graph=small), device)
            # all tokens of all ranks hit the experts; this rank reads its own active experts
            allx = [torch.empty_like(x_mine) for _ in range(world)]
            dist.all_gather(allx, x_mine)
            ids = torch.unique(par.route(layer, torch.cat(allx))[1].long())
            mine = int((ep_layer.owner[ids] == rank).sum())
            floor_ep = max_over_ranks(mine * expert_bytes(cfg) / HBM_BPS * 1e6, device)
            ex_bytes = max_over_ranks(stats["dispatch_bytes"] / max(T, 1), device)
            rows.append((f"ep{world} exact", T, ep_exact, None, ex_bytes, floor_ep))
            rows.append((f"ep{world} padded", T, ep_pad, comm, world * cap * (2 * H + 2) * 2 / max(T, 1), floor_ep))
            # dedup: one row per (token, owner rank)
            dstats = {}
            par.ep_moe_forward(ep_layer, x_mine, dedup=True, stats=dstats)
            ep_dd = max_over_ranks(bench.median_us(lambda: par.ep_moe_forward(ep_layer, x_mine, dedup=True)), device)
            ep_dd_pad = max_over_ranks(bench.median_us(
                lambda: par.ep_moe_forward(ep_layer, x_mine, mode="padded", capacity=T, dedup=True),
                graph=small), device)
            dd_bytes = max_over_ranks(dstats["dispatch_bytes"] / max(T, 1), device)
            rows.append((f"ep{world} dedup exact", T, ep_dd, None, dd_bytes, floor_ep))
            rows.append((f"ep{world} dedup padded", T, ep_dd_pad, None,
                         world * T * (2 * H + 4 * k) * 2 / max(T, 1), floor_ep))
    if rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (gloo smoke test)"
        head = (f"\n### k2kernels.parallel, preset {args.preset}, world {world}, {name}, "
                f"torch {torch.__version__}\n\n"
                "| config | T/rank | µs (max over ranks of median) | comm µs | comm share "
                "| bytes moved/token/rank | weight floor µs | floor % |\n"
                "|---|---|---|---|---|---|---|---|\n")
        lines = []
        for cfg_name, T, us, comm, bpt, floor in rows:
            share = f"{100 * comm / us:.0f}%" if comm is not None else "-"
            lines.append(f"| {cfg_name} | {T} | {us:.1f} | {comm:.1f} | {share} | "
                         f"{bpt:.0f} | {floor:.1f} | {100 * floor / us:.0f}% |".replace("| None |", "| - |")
                         if comm is not None else
                         f"| {cfg_name} | {T} | {us:.1f} | - | - | {'-' if bpt is None else f'{bpt:.0f}'} | "
                         f"{floor:.1f} | {100 * floor / us:.0f}% |")
        table = head + "\n".join(lines) + "\n"
        print(table)
        if args.out:
            with open(args.out, "a") as f:
                f.write(table)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
