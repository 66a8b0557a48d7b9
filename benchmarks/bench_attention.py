"""fp8_kv_attention vs torch SDPA (BF16 K/V, contiguous) in one process, on one GPU.

Timing: median of CUDA-event times around a CUDA-graph replay of one call; before every replay L2 is
flushed by READING a 256 MB buffer (a write would leave dirty lines that slow the next read). Memory:
PyTorch's expandable segments unless PYTORCH_CUDA_ALLOC_CONF is set (why: the comment at the import).
Decode: KV bytes = the FP8 K/V bytes the op must read (B * ctx * Hkv * (D + DV)); % of 4.2 TB/s.
Prefill: causal FLOPs = 2 * (D + DV) * Hq * sum over queries of visible keys; TFLOP/s vs 767 (BF16 dense).

  python3 benchmarks/bench_attention.py [--quick] [--sweep] [--json out.json]
  python3 benchmarks/bench_attention.py --cases prefill|prefill_kernels|groups|crossover    (A/B sets; benchmarks/ab_compare.py)
Rows marked rows8 / prefill-layout / latent-layout time the opt-in layouts (K2K_ATTN_ROWS8=1,
K2K_ATTN_PREFILL=1, K2K_ATTN_LATENT=1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

# The KV cache's memory placement changes the decode speed: B=32 8K GQA 64/8 ran at 88 % of copy in a
# fresh allocation and at 81 % in memory cudaMalloc'ed after the table's earlier cases had been freed
# (benchmarks/probe_decode_instance.py; RESULTS.md, ninth session). Expandable segments gave 87-89 %
# (144.3-146.4 us) in every placement tried, as did one 16 + 16 GiB pool (an engine-like cache) with the
# default allocator, so the table uses them (ours and SDPA alike, same process).
# `PYTORCH_CUDA_ALLOC_CONF= python3 ...` times the default allocator. (Newer torch also reads
# PYTORCH_ALLOC_CONF and may warn that this name is deprecated; torch 2.11 on the H200 obeyed it.)
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")   # before torch allocates
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

os.environ.setdefault("K2K_SMEM_LIMIT", "101376")          # launches must fit SM120, as in the tests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import k2kernels  # noqa: E402,F401
from k2kernels.reference.kv_cache import quantize_kv  # noqa: E402

OPS = torch.ops.k2kernels
COPY_TBS = 4.2
BF16_TFLOPS = 767.0


class Timer:
    def __init__(self):
        self.flush_buf = torch.empty(256 * 2 ** 20 // 4, dtype=torch.float32, device="cuda").uniform_()
        self.sink = torch.empty((), device="cuda")

    def flush(self):
        self.sink = self.flush_buf.sum()                   # read 256 MB: evicts L2 without dirty lines

    def graph_median_us(self, fn, iters=30, warmup=3):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
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


def make_paged(B, ctx, Hkv, D, DV, latent, page_size, gen):
    n_per = (ctx + page_size - 1) // page_size
    total = B * n_per
    perm = torch.randperm(total, generator=gen, device="cpu").to(torch.int32)
    block_table = perm.reshape(B, n_per).cuda()
    k_scale = torch.tensor(4.0 / 448, device="cuda")
    k_cache = quantize_kv(torch.randn(total * page_size, Hkv, D, device="cuda", dtype=torch.bfloat16), k_scale)
    k_cache = k_cache.reshape(total, page_size, Hkv, D)
    v_cache = v_scale = None
    if not latent:
        v_scale = torch.tensor(4.0 / 448, device="cuda")
        v_cache = quantize_kv(torch.randn(total * page_size, Hkv, DV, device="cuda", dtype=torch.bfloat16), v_scale)
        v_cache = v_cache.reshape(total, page_size, Hkv, DV)
    return k_cache, v_cache, block_table, k_scale, v_scale


def sdpa_fn(q, k, v, causal):
    """BF16 SDPA peer: flash backend where it applies (D <= 256), else whatever SDPA picks."""
    def run():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    D = q.shape[-1]
    if D <= 256 and k.shape[-1] == v.shape[-1]:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                run()
            def flash():
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    return run()
            return flash, "flash"
        except RuntimeError:
            pass
    return run, "default"


def bench_decode(timer, B, ctx, Hq, Hkv, D, DV, latent, page_size, rows, gen, peer=True, window=-1):
    """window >= 0: sliding window of window + 1 keys; KV bytes and the SDPA peer (the last window + 1
    keys, contiguous BF16) count only those keys."""
    k_cache, v_cache, bt, ks, vs = make_paged(B, ctx, Hkv, D, DV, latent, page_size, gen)
    q = torch.randn(B, Hq, D, device="cuda", dtype=torch.bfloat16)
    seq_lens = torch.full((B,), ctx, dtype=torch.int32, device="cuda")
    cu = torch.arange(B + 1, dtype=torch.int32, device="cuda")
    scale = D ** -0.5
    ours = lambda: OPS.fp8_kv_attention(q, k_cache, v_cache, bt, seq_lens, cu, ks, vs, scale, True, 1,  # noqa: E731
                                        DV if latent else -1, window)
    t_ours = timer.graph_median_us(ours)
    keys = ctx if window < 0 else min(ctx, window + 1)          # keys a query sees
    kv_bytes = B * keys * Hkv * (D + (0 if latent else DV))     # latent: V is inside K
    del k_cache, v_cache
    # peer: BF16 K/V contiguous [B, Hkv, ctx, D]
    t_sdpa, backend = float("nan"), "-"
    try:
        if not peer:
            raise RuntimeError("peer skipped")
        kb = torch.randn(B, Hkv, keys, D, device="cuda", dtype=torch.bfloat16)
        vb = kb[..., :DV] if latent else torch.randn(B, Hkv, keys, DV, device="cuda", dtype=torch.bfloat16)
        qb = q.reshape(B, Hq, 1, D)
        fn, backend = sdpa_fn(qb, kb, vb, False)
        t_sdpa = timer.graph_median_us(fn)
        del kb, vb
    except (RuntimeError, torch.OutOfMemoryError) as e:  # noqa: PERF203
        backend = f"failed: {str(e).splitlines()[0][:60]}"
    torch.cuda.empty_cache()
    flops = 2 * B * Hq * keys * (D + DV)
    win = f" window={window}" if window >= 0 else ""
    rows.append(dict(case=f"decode{' latent' if latent else ''} B={B} ctx={ctx}{win} Hq={Hq} Hkv={Hkv} D={D}/{DV} p{page_size}",
                     us=t_ours, tbs=kv_bytes / t_ours / 1e6, pct_copy=100 * kv_bytes / t_ours / 1e6 / COPY_TBS,
                     tflops=flops / t_ours / 1e6, sdpa_us=t_sdpa, sdpa_backend=backend, speedup=t_sdpa / t_ours))


def bench_prefill(timer, T, Hq, Hkv, D, page_size, rows, gen, window=-1):
    """window >= 0: ours with the sliding window (FLOPs of the window's keys only); no peer (SDPA has
    no sliding window)."""
    k_cache, v_cache, bt, ks, vs = make_paged(1, T, Hkv, D, D, False, page_size, gen)
    q = torch.randn(T, Hq, D, device="cuda", dtype=torch.bfloat16)
    seq_lens = torch.tensor([T], dtype=torch.int32, device="cuda")
    cu = torch.tensor([0, T], dtype=torch.int32, device="cuda")
    ours = lambda: OPS.fp8_kv_attention(q, k_cache, v_cache, bt, seq_lens, cu, ks, vs, D ** -0.5, True, T, -1,  # noqa: E731
                                        window)
    t_ours = timer.graph_median_us(ours, iters=10)
    if window >= 0:
        pairs = sum(min(i + 1, window + 1) for i in range(T))       # (query, key) pairs in the window
        flops = 2 * 2 * D * Hq * pairs
        rows.append(dict(case=f"prefill causal T={T} window={window} Hq={Hq} Hkv={Hkv} D={D} p{page_size}", us=t_ours,
                         tbs=float("nan"), pct_copy=float("nan"), tflops=flops / t_ours / 1e6, sdpa_us=float("nan"),
                         sdpa_backend="-", speedup=float("nan")))
        return
    qb = q.transpose(0, 1).reshape(1, Hq, T, D)
    kb = torch.randn(1, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
    vb = torch.randn(1, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
    fn, backend = sdpa_fn(qb, kb, vb, True)
    t_sdpa = timer.graph_median_us(fn, iters=10)
    flops = 2 * 2 * D * Hq * (T * (T + 1) // 2)
    rows.append(dict(case=f"prefill causal T={T} Hq={Hq} Hkv={Hkv} D={D} p{page_size}", us=t_ours, tbs=float("nan"),
                     pct_copy=float("nan"), tflops=flops / t_ours / 1e6, sdpa_us=t_sdpa, sdpa_backend=backend,
                     speedup=t_sdpa / t_ours, sdpa_tflops=flops / t_sdpa / 1e6))


def run_default(args, timer, rows, gen):
    """The standing table: decode (GQA 64/8, MLA latent), prefill, each opt-in layout; --window, --sweep."""
    Bs, ctxs = ([32], [8192]) if args.quick else ([1, 8, 32], [1024, 8192, 32768])
    for B in Bs:
        for ctx in ctxs:
            bench_decode(timer, B, ctx, 64, 8, 128, 128, False, 16, rows, gen)
            print(rows[-1], flush=True)
    for B in ([32] if args.quick else [1, 8, 32]):     # MLA-absorbed latent MQA: Kimi-K2 64 heads, 576/512
        bench_decode(timer, B, 8192, 64, 1, 576, 512, True, 64, rows, gen)
        print(rows[-1], flush=True)
    if args.window >= 0:
        bench_decode(timer, 32, 32768, 64, 8, 128, 128, False, 16, rows, gen, window=-1, peer=False)
        print(rows[-1], flush=True)
        bench_decode(timer, 32, 32768, 64, 8, 128, 128, False, 16, rows, gen, window=args.window)
        print(rows[-1], flush=True)
        bench_prefill(timer, 8192, 64, 8, 128, 16, rows, gen, window=args.window)
        print(rows[-1], flush=True)
    if args.sweep:
        for B, ctx in ((32, 8192), (8, 8192), (1, 8192)):
            for sp in ("1", "2", "3", "4", "6", "8", "16"):
                os.environ["K2K_ATTN_SPLITS"] = sp
                bench_decode(timer, B, ctx, 64, 8, 128, 128, False, 16, rows, gen, peer=False)
                rows[-1]["case"] += f" splits={sp}"
                print(rows[-1], flush=True)
        os.environ.pop("K2K_ATTN_SPLITS")
    if not args.quick:
        bench_prefill(timer, 8192, 64, 8, 128, 16, rows, gen)
        print(rows[-1], flush=True)
        os.environ["K2K_ATTN_PREFILL"] = "1"                # opt-in FA2 prefill layout
        bench_prefill(timer, 8192, 64, 8, 128, 16, rows, gen)
        rows[-1]["case"] += " prefill-layout"
        print(rows[-1], flush=True)
        os.environ.pop("K2K_ATTN_PREFILL")
        os.environ["K2K_ATTN_ROWS8"] = "1"                  # opt-in rows8 decode layout (group <= 8)
        for B, ctx in ((1, 8192), (8, 8192), (32, 8192), (32, 32768)):
            bench_decode(timer, B, ctx, 64, 8, 128, 128, False, 16, rows, gen, peer=False)
            rows[-1]["case"] += " rows8"
            print(rows[-1], flush=True)
        os.environ.pop("K2K_ATTN_ROWS8")
        os.environ["K2K_ATTN_LATENT"] = "1"                 # opt-in 8-warp MLA latent layout
        for B in (1, 8, 32):
            bench_decode(timer, B, 8192, 64, 1, 576, 512, True, 64, rows, gen, peer=False)
            rows[-1]["case"] += " latent-layout"
            print(rows[-1], flush=True)
        os.environ.pop("K2K_ATTN_LATENT")


def run_prefill(timer, rows, gen):
    """Prefill A/B set (seventh session): causal 8K / 2K / 512 tokens at D 128 and 8K at D 64, with SDPA."""
    for T, D in ((8192, 128), (2048, 128), (512, 128), (8192, 64)):
        bench_prefill(timer, T, 64, 8, D, 16, rows, gen)
        print(rows[-1], flush=True)


def run_prefill_kernels(timer, rows, gen):
    """The prefill kernels side by side (eleventh session): the mma.sync kernel (K2K_ATTN_PREFILL_WGMMA=0)
    and each sm_90a wgmma configuration (keys per chunk), causal 8K / 2K at D 128 and 8K at D 64, with SDPA.
    On GPUs other than sm_90 every row runs the mma.sync kernel."""
    for T, D, configs in ((8192, 128, ("0", "64", "96")), (2048, 128, ("0", "64", "96")), (8192, 64, ("0", "64", "128"))):
        for knob in configs:
            os.environ["K2K_ATTN_PREFILL_WGMMA"] = knob
            bench_prefill(timer, T, 64, 8, D, 16, rows, gen)
            rows[-1]["case"] += f" wgmma={knob}"
            print(rows[-1], flush=True)
    os.environ.pop("K2K_ATTN_PREFILL_WGMMA")


def run_groups(timer, rows, gen):
    """Decode at large GQA groups, the launcher's choice, with SDPA: Hq 128 over Hkv 8 / 4 / 2 (groups
    16 / 32 / 64) at B 32 8K, group 64 at 32K, B 1 and 8 at group 64, and GQA 64/8 as the control."""
    for B, ctx, Hq, Hkv, peer in ((32, 8192, 128, 8, True), (32, 8192, 128, 4, True), (32, 8192, 128, 2, True),
                                  (32, 32768, 128, 2, True), (1, 8192, 128, 2, True), (8, 8192, 128, 2, True),
                                  (32, 8192, 64, 8, False)):
        bench_decode(timer, B, ctx, Hq, Hkv, 128, 128, False, 16, rows, gen, peer=peer)
        print(rows[-1], flush=True)


def run_crossover(timer, rows, gen):
    """Where the prefill layout starts to win for decode at groups 32 / 64 (Hq 128, 8K): each (B, Hkv)
    with K2K_ATTN_PREFILL=1 then =0, no peer (kPrefillDecodeMinHeads in csrc/attention/attention_ops.cpp)."""
    for Hkv in (4, 2):
        for B in (1, 2, 4, 8):
            for knob in ("1", "0"):
                os.environ["K2K_ATTN_PREFILL"] = knob
                bench_decode(timer, B, 8192, 128, Hkv, 128, 128, False, 16, rows, gen, peer=False)
                rows[-1]["case"] += f" prefill-layout={knob}"
                print(rows[-1], flush=True)
    os.environ.pop("K2K_ATTN_PREFILL")


CASE_SETS = {"prefill": run_prefill, "prefill_kernels": run_prefill_kernels, "groups": run_groups,
             "crossover": run_crossover}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also time split counts (K2K_ATTN_SPLITS) for tuning")
    ap.add_argument("--window", type=int, default=-1,
                    help="also time sliding-window attention: decode B=32 over 32K and prefill 8K with this window")
    ap.add_argument("--cases", default="default", choices=["default"] + sorted(CASE_SETS),
                    help="a named case set instead of the standing table (the A/B sets of benchmarks/RESULTS.md)")
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "bench_attention.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    timer = Timer()
    rows = []
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"K2K_SMEM_LIMIT={os.environ.get('K2K_SMEM_LIMIT', '-')}  "
          f"PYTORCH_CUDA_ALLOC_CONF={os.environ.get('PYTORCH_CUDA_ALLOC_CONF') or '(default)'}", flush=True)
    if args.cases == "default":
        run_default(args, timer, rows, gen)
    else:
        CASE_SETS[args.cases](timer, rows, gen)
    print()
    print(f"{'case':58s} {'us':>9s} {'TB/s':>6s} {'%4.2':>6s} {'TFLOP/s':>8s} {'SDPA us':>9s} {'x SDPA':>7s}  backend")
    for r in rows:
        print(f"{r['case']:58s} {r['us']:9.1f} {r['tbs']:6.2f} {r['pct_copy']:6.1f} {r['tflops']:8.1f} "
              f"{r['sdpa_us']:9.1f} {r['speedup']:7.2f}  {r['sdpa_backend']}")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
