"""Why B=32, 8K keys, GQA 64/8, D 128 decode measures ~145 us (88 % of 4.2 TB/s) in some instances and
~157 us (81 %) in bench_attention.py's table: is it the GPU's state after other work, or where the
cache's memory lies once the caching allocator has churned?

    python benchmarks/probe_decode_instance.py

Ninth session, first probe (one input varied at a time in a fresh process: new graph, new q, new page
order, the cache cloned to new memory): every instance 144-145 us. So the slow instances need the
benchmark's history. This probe replays that history (bench_attention.py's default table's decode cases
before B=32 8K, with their SDPA peers) and measures, after it, the cache allocated at the start and a
cache allocated anew, and prints where each cache lies. Timing as bench_attention.py (graph replay,
256 MB read before each, median of 30).

Measured (H200, 2026-11-29, ninth session; benchmarks/RESULTS.md): with the default allocator, lines 1,
2, 4, 4b and 6 144.2-145.4 us (88 %), lines 3 and 5 (a cache made by make_paged after the history)
156.9-158.7 us (81 %): the same kernel and GPU state, only the cache's memory differs. With
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True every line 144.3-146.4 us. Line 3's slow cache read with
its pages in address order (3b): 143.9 us. An engine-like 16 + 16 GiB pool with the pages scattered over
all of it (7): 145.4 us with the default allocator, 146.4 with expandable segments. So only the slow
placement read in scattered page order is slow; why is not known (TLB reach is a guess, not measured).
"""
from __future__ import annotations

import os
import sys

# the default allocator unless the caller sets one (bench_attention.py would pick expandable segments)
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention as B  # noqa: E402

OPS = torch.ops.k2kernels
B_, CTX, HQ, HKV, D, PAGE = 32, 8192, 64, 8, 128, 16
POOL_GIB = 16


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    timer = B.Timer()
    print(f"PYTORCH_CUDA_ALLOC_CONF={os.environ.get('PYTORCH_CUDA_ALLOC_CONF') or '(default)'}", flush=True)
    kv_bytes = B_ * CTX * HKV * 2 * D
    q = torch.randn(B_, HQ, D, device="cuda", dtype=torch.bfloat16)
    sl = torch.full((B_,), CTX, dtype=torch.int32, device="cuda")
    cu = torch.arange(B_ + 1, dtype=torch.int32, device="cuda")

    def where(t):
        """address, and the allocator segment holding it (base, size) with the offset inside it"""
        p = t.data_ptr()
        for seg in torch.cuda.memory_snapshot():
            if seg["address"] <= p < seg["address"] + seg["total_size"]:
                return f"{p:#x} seg {seg['total_size'] / 2**20:.0f}M +{(p - seg['address']) / 2**20:.0f}M"
        return f"{p:#x} ?"

    def measure(tag, k, v, bt, ks, vs):
        us = timer.graph_median_us(lambda: OPS.fp8_kv_attention(q, k, v, bt, sl, cu, ks, vs, D ** -0.5, True, 1, -1, -1))
        print(f"{tag:62s} {us:7.1f} us  {100 * kv_bytes / us / 1e6 / B.COPY_TBS:5.1f} %   K {where(k)}  V {where(v)}",
              flush=True)

    first = B.make_paged(B_, CTX, HKV, D, D, False, PAGE, gen)
    measure("1 cache allocated at start", *first)
    rows = []
    for b in (1, 8):                                   # bench_attention.py's table before B=32 8K
        for ctx in (1024, 8192, 32768):
            B.bench_decode(timer, b, ctx, 64, 8, 128, 128, False, 16, rows, gen)
    B.bench_decode(timer, 32, 1024, 64, 8, 128, 128, False, 16, rows, gen)
    print("   (history: " + ", ".join(f"{r['us']:.1f}" for r in rows) + " us)", flush=True)
    measure("2 the start cache again, after the history", *first)
    fresh = B.make_paged(B_, CTX, HKV, D, D, False, PAGE, gen)
    measure("3 a cache allocated after the history", *fresh)
    in_order = torch.arange(fresh[2].numel(), dtype=torch.int32, device="cuda").reshape(fresh[2].shape)
    measure("3b line 3's cache read with its pages in address order", *fresh[:2], in_order, *fresh[3:])
    k_copy, v_copy = first[0].clone(), first[1].clone()
    measure("4 the start cache's values cloned after the history", k_copy, v_copy, *first[2:])
    pool = torch.empty((2,) + tuple(first[0].shape), dtype=first[0].dtype, device="cuda")
    pool[0].copy_(first[0])
    pool[1].copy_(first[1])
    measure("4b the start cache's values in one K+V pool after the history", pool[0], pool[1], *first[2:])
    del pool
    B.bench_decode(timer, 32, 8192, 64, 8, 128, 128, False, 16, rows, gen, peer=False)
    print(f"{'5 bench_decode itself (its call in the table, no peer)':62s} {rows[-1]['us']:7.1f} us  {rows[-1]['pct_copy']:5.1f} %")
    del fresh, k_copy, v_copy
    torch.cuda.empty_cache()
    measure("6 the start cache, after empty_cache", *first)
    # an engine's cache: one large pool, a batch's pages scattered across all of it
    if torch.cuda.mem_get_info()[0] < (2 * POOL_GIB + 1) * 2**30:
        print(f"   (line 7 skipped: less than {2 * POOL_GIB + 1} GiB free for the pool)")
        return
    pool_pages = POOL_GIB * 2**30 // (PAGE * HKV * D)
    n = first[0].shape[0]
    pool_k = torch.empty((pool_pages,) + tuple(first[0].shape[1:]), dtype=first[0].dtype, device="cuda")
    pool_v = torch.empty_like(pool_k)
    for i in range(0, pool_pages, n):                  # every page holds real (repeated) cache values
        m = min(n, pool_pages - i)
        pool_k[i:i + m].copy_(first[0][:m])
        pool_v[i:i + m].copy_(first[1][:m])
    spread = torch.randperm(pool_pages, generator=gen)[:n].to(torch.int32).reshape(first[2].shape).cuda()
    measure(f"7 a {POOL_GIB} GiB K + {POOL_GIB} GiB V pool, the pages scattered over it", pool_k, pool_v, spread,
            *first[3:])
    packed = torch.arange(n, dtype=torch.int32, device="cuda").reshape(first[2].shape)
    measure("7b the same pool, the pages at its start in address order", pool_k, pool_v, packed, *first[3:])
    print(f"   allocator: reserved {torch.cuda.memory_reserved() / 2**30:.2f} GiB, "
          f"segments {len(torch.cuda.memory_snapshot())}")


if __name__ == "__main__":
    main()
