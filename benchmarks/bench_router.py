"""topk_router (Kimi-K2 config: E=384, k=8, sigmoid + bias, renormalize, x2.827) and moe_align vs
the PyTorch reference composite and its torch.compile version, in one process, on one GPU.

    python3 benchmarks/bench_router.py [--quick] [--json out.json]
    python3 benchmarks/bench_router.py --kernels     # each router kernel forced, large and small T

Timing (/work/shared/docs/gpu.md): every timed call is a CUDA-graph replay of ONE call, preceded by
READING a 256 MB buffer (evicts L2 without dirty lines; the flush is enqueued first so the GPU is busy
while the replay is submitted); CUDA events around the replay only; median. "warm" = a graph of 20
back-to-back calls on L2-resident inputs, per call (the block kernel is launched with PDL, so a call's
launch overlaps the previous call); "after plain" = 20 x (a 1-element torch kernel + one call), minus
that kernel's warm time: a call whose predecessor does not let it launch early. "warp cold / warm" = the warp-per-token kernel
forced (K2K_ROUTER_KERNEL=warp; T <= 512), where the launcher would pick the block-per-token kernel
for T <= 256. Roofline: bytes of logits read once (+ outputs)
at 4.2 TB/s, and a measured read of the same logits (torch.sum, same method) as the practical floor.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

os.environ.setdefault("K2K_SMEM_LIMIT", "101376")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import k2kernels  # noqa: E402,F401
from k2kernels.reference.router import topk_router as ref_router  # noqa: E402

OPS = torch.ops.k2kernels
COPY_TBS = 4.2
E, K, RSF = 384, 8, 2.827
TOKENS = (1, 8, 64, 512, 4096, 16384)


class Timer:
    def __init__(self):
        self.flush_buf = torch.empty(256 * 2 ** 20 // 4, dtype=torch.float32, device="cuda").uniform_()
        self.sink = torch.empty((), device="cuda")

    def flush(self):
        self.sink = self.flush_buf.sum()

    def _graph(self, fn, calls):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        return g

    def cold_us(self, fn, iters=50):
        g = self._graph(fn, 1)
        times = []
        for _ in range(iters):
            self.flush()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3)
        return statistics.median(times)

    def warm_us(self, fn, calls=20, iters=20):
        g = self._graph(fn, calls)
        g.replay()
        times = []
        for _ in range(iters):
            self.flush()
            g.replay()       # first replay pulls the inputs into L2 ...
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()       # ... this one is timed
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3 / calls)
        return statistics.median(times)


def align_composite(ids, num_experts):
    """Capturable PyTorch composite of moe_align (the reference's bincount syncs; scatter_add does not)."""
    flat = ids.reshape(-1).long()
    order = torch.sort(flat, stable=True).indices
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=ids.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    offsets = torch.cat([counts.new_zeros(1), counts[:num_experts].cumsum(0)])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=ids.device)
    return offsets.int(), order.int(), inverse.int()


def safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a failing peer must not hide our numbers
        print(f"  peer failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
        return float("nan")


def kernel_sweep(timer):
    """Each router kernel forced (K2K_ROUTER_KERNEL, read at capture): large T cold / warm (10 calls per
    graph) next to a read of the logits, and small T warm / after a plain kernel. The twelfth session
    measured its tables with this code (then exp_run/router_big.py and exp_run/router_small.py)."""
    bias = torch.randn(E, device="cuda") * 0.1
    tiny = torch.zeros(1, device="cuda")
    floor = timer.warm_us(lambda: tiny.add_(1))
    print(f"{'dtype':<9}{'T':>6}{'kernel':>7}{'cold':>8}{'warm':>8}{'read':>8}{'4.2TB/s':>9}", flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        for T in (4096, 16384, 65536):
            logits = torch.randn(T, E, device="cuda").to(dtype)
            read = timer.cold_us(lambda: logits.sum())
            ideal = (logits.numel() * logits.element_size() + T * K * 8) / (COPY_TBS * 1e6)
            for kern in ("warp", "block"):
                os.environ["K2K_ROUTER_KERNEL"] = kern
                f = lambda: OPS.topk_router(logits, bias, K, "sigmoid", 1, 1, True, RSF)  # noqa: E731
                print(f"{str(dtype)[6:]:<9}{T:>6}{kern:>7}{timer.cold_us(f):>8.2f}"
                      f"{timer.warm_us(f, calls=10, iters=10):>8.2f}{read:>8.2f}{ideal:>9.2f}", flush=True)
    print(f"one 1-element torch kernel, warm: {floor:.2f} us", flush=True)
    print(f"{'T':>5}{'kernel':>7}{'warm':>8}{'after plain':>12}", flush=True)
    for kern in ("block", "warp"):
        os.environ["K2K_ROUTER_KERNEL"] = kern
        for T in (1, 2, 4, 8, 16, 64, 256):
            logits = torch.randn(T, E, device="cuda")
            f = lambda: OPS.topk_router(logits, bias, K, "sigmoid", 1, 1, True, RSF)  # noqa: E731
            after = timer.warm_us(lambda: (tiny.add_(1), f())) - floor
            print(f"{T:>5}{kern:>7}{timer.warm_us(f):>8.2f}{after:>12.2f}", flush=True)
    os.environ.pop("K2K_ROUTER_KERNEL")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kernels", action="store_true", help="each router kernel forced, large and small T")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", type=int, default=0, help="just run the Kimi router at this T (for ncu)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.profile:
        logits = torch.randn(args.profile, E, device="cuda")
        bias = torch.randn(E, device="cuda") * 0.1
        for _ in range(5):
            OPS.topk_router(logits, bias, K, "sigmoid", 1, 1, True, RSF)
        torch.cuda.synchronize()
        return
    timer = Timer()
    if args.kernels:
        kernel_sweep(timer)
        return
    tokens = (1, 8, 64, 512, 16384) if args.quick else TOKENS
    bias = torch.randn(E, device="cuda") * 0.1
    compiled = torch.compile(ref_router, dynamic=True)
    rows = []
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    hdr = (f"{'op':<12}{'T':>6} {'ours cold':>10} {'ours warm':>10} {'ref eager':>10} {'ref compile':>12} "
           f"{'read floor':>11} {'4.2TB/s':>8} {'vs compile':>10} {'vs read':>8} {'warp cold':>10} {'warp warm':>10} "
           f"{'after plain':>11}")
    tiny = torch.zeros(1, device="cuda")
    floor_cold = timer.cold_us(lambda: tiny.add_(1))
    floor_warm = timer.warm_us(lambda: tiny.add_(1))
    rows.append(dict(op="one_tiny_kernel", ours_cold_us=floor_cold, ours_warm_us=floor_warm))
    print(f"floor: one 1-element torch kernel, same timing: cold {floor_cold:.2f} us, warm {floor_warm:.2f} us",
          flush=True)
    print(hdr, flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        for T in tokens if dtype == torch.float32 else (64, 16384):
            logits = torch.randn(T, E, device="cuda").to(dtype)
            args_ = (logits, bias, K, "sigmoid", 1, 1, True, RSF)
            ours = timer.cold_us(lambda: OPS.topk_router(*args_))
            warm = timer.warm_us(lambda: OPS.topk_router(*args_))
            # each call after a plain (non-PDL) kernel, that kernel's own warm time subtracted: what a
            # router gains from PDL only when its predecessor lets it launch early is left out
            after_plain = timer.warm_us(lambda: (tiny.add_(1), OPS.topk_router(*args_))) - floor_warm
            warm_warp = cold_warp = float("nan")
            if T <= 512:        # the warp-per-token kernel forced (the launcher reads the knob at capture)
                os.environ["K2K_ROUTER_KERNEL"] = "warp"
                try:
                    cold_warp = timer.cold_us(lambda: OPS.topk_router(*args_))
                    warm_warp = timer.warm_us(lambda: OPS.topk_router(*args_))
                finally:
                    del os.environ["K2K_ROUTER_KERNEL"]
            ref = safe(lambda: timer.cold_us(lambda: ref_router(*args_), iters=20))
            comp = safe(lambda: timer.cold_us(lambda: compiled(*args_), iters=20))
            read = timer.cold_us(lambda: logits.sum())
            nbytes = logits.numel() * logits.element_size() + T * K * 8 + E * 4
            ideal = nbytes / (COPY_TBS * 1e12) * 1e6
            r = dict(op="topk_router", dtype=str(dtype).replace("torch.", ""), T=T, ours_cold_us=ours,
                     ours_warm_us=warm, ours_after_plain_us=after_plain, warp_kernel_cold_us=cold_warp, warp_kernel_warm_us=warm_warp, ref_eager_us=ref, ref_compile_us=comp, read_logits_us=read,
                     ideal_4p2_us=ideal, pct_of_4p2=100 * ideal / ours, speedup_vs_compile=comp / ours,
                     ratio_to_read=ours / read)
            rows.append(r)
            name = "router" + ("/bf16" if dtype == torch.bfloat16 else "")
            print(f"{name:<12}{T:>6} {ours:>10.2f} {warm:>10.2f} {ref:>10.2f} {comp:>12.2f} {read:>11.2f} "
                  f"{ideal:>8.2f} {comp / ours:>9.1f}x {ours / read:>7.2f}x {cold_warp:>10.2f} {warm_warp:>10.2f} "
                  f"{after_plain:>11.2f}", flush=True)
    for T in tokens:
        ids = OPS.topk_router(torch.randn(T, E, device="cuda"), bias, K, "sigmoid", 1, 1, True, RSF)[1]
        ours = timer.cold_us(lambda: OPS.moe_align(ids, E, 1, None))
        warm = timer.warm_us(lambda: OPS.moe_align(ids, E, 1, None))
        ref = safe(lambda: timer.cold_us(lambda: align_composite(ids, E), iters=20))
        nbytes = T * K * 4 * 3 + (E + 1) * 8
        ideal = nbytes / (COPY_TBS * 1e12) * 1e6
        rows.append(dict(op="moe_align", T=T, ours_cold_us=ours, ours_warm_us=warm, composite_us=ref,
                         ideal_4p2_us=ideal))
        print(f"{'moe_align':<12}{T:>6} {ours:>10.2f} {warm:>10.2f} {ref:>10.2f} {'-':>12} {'-':>11} "
              f"{ideal:>8.2f} {ref / ours:>9.1f}x {'-':>8}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
