"""The fused-op part of `python -m k2kernels` (k2kernels/__main__.py): run the demo's layer through
torch.ops.k2kernels.fused_moe (KimiMoE), check it, and on a GPU time it, its stages and a BF16 torch
baseline, print bandwidth / roofline / decode tok/s, and optionally plot the roofline."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import nvfp4
from .fused_moe import KimiMoE

COPY_BPS = 4.2e12          # measured H200 device-copy bandwidth (shared/docs/gpu.md)
BF16_TFLOPS = 767.0        # measured H200 dense BF16 matmul
GRAPH_MAX_T = 64           # graph replay for decode-sized batches (launch overhead would dominate)


def torch_moe_bf16(x, logits, bias, w13t, w2t, top_k, rsf):
    """BF16 torch baseline: router, stable sort, torch._grouped_mm x 2, SiLU*up, weighted combine (no
    host sync, graph-capturable). w13t [E, H, 2I], w2t [E, I, H]: transposed views of row-major weights."""
    T, H = x.shape
    E, I = w13t.shape[0], w13t.shape[2] // 2
    s = logits.float().sigmoid()
    ids = (s + bias).topk(top_k, dim=1).indices
    w = s.gather(1, ids)
    w = w / w.sum(-1, keepdim=True) * rsf
    flat = ids.flatten()
    order = torch.sort(flat, stable=True).indices
    counts = torch.zeros(E, dtype=torch.int64, device=x.device).scatter_add_(0, flat, torch.ones_like(flat))
    ends = counts.cumsum(0).to(torch.int32)
    h = torch._grouped_mm(x[order // top_k], w13t, offs=ends)
    y = torch._grouped_mm(F.silu(h[:, :I]) * h[:, I:], w2t, offs=ends)
    y_pairs = torch.empty_like(y)
    y_pairs[order] = y
    return (y_pairs.view(T, top_k, H).float() * w.unsqueeze(-1)).sum(1).to(torch.bfloat16)


def _stages(m: KimiMoE, x, logits):
    ops, k, E = torch.ops.k2kernels, m.cfg.top_k, m.w13.shape[0]
    rsf, bias = m.cfg.routed_scaling_factor, m.e_score_correction_bias
    tw, ids = ops.topk_router(logits, bias, k, m.cfg.scoring, 1, 1, True, rsf)
    off, pairs, inv, _ = ops.moe_align(ids, E, 1, None)
    a = ops.moe_gather(x, pairs, k)
    h = ops.moe_gemm(a, m.w13, m.w13_scale, m.w13_alpha, off)
    act = ops.moe_silu_mul(h)
    y = ops.moe_gemm(act, m.w2, m.w2_scale, m.w2_alpha, off)
    return [("router gate GEMM (torch)", lambda: m.router_logits(x)),
            ("topk_router", lambda: ops.topk_router(logits, bias, k, m.cfg.scoring, 1, 1, True, rsf)),
            ("moe_align", lambda: ops.moe_align(ids, E, 1, None)),
            ("moe_gather", lambda: ops.moe_gather(x, pairs, k)),
            ("moe_gemm gate_up", lambda: ops.moe_gemm(a, m.w13, m.w13_scale, m.w13_alpha, off)),
            ("moe_silu_mul", lambda: ops.moe_silu_mul(h)),
            ("moe_gemm down", lambda: ops.moe_gemm(act, m.w2, m.w2_scale, m.w2_alpha, off)),
            ("moe_combine", lambda: ops.moe_combine(y, inv, tw, None))]


def _bf16_weights(m: KimiMoE):
    """The same NVFP4 weights dequantized to BF16 (one expert at a time: no fp32 copy of all)."""
    E, N, K = m.w13.shape[0], m.w13.shape[1], m.w13.shape[2] * 2
    w13 = torch.empty(E, N, K, dtype=torch.bfloat16, device=m.w13.device)
    w2 = torch.empty(E, K, N // 2, dtype=torch.bfloat16, device=m.w13.device)
    for e in range(E):
        w13[e] = nvfp4.dequantize(m.w13[e], m.w13_scale[e], m.w13_alpha[e]).to(torch.bfloat16)
        w2[e] = nvfp4.dequantize(m.w2[e], m.w2_scale[e], m.w2_alpha[e]).to(torch.bfloat16)
    return w13.transpose(1, 2), w2.transpose(1, 2)


def run_fused(cfg, layer, x, ref, dev, args) -> bool:
    from .autotune import time_cuda
    T = x.shape[0]
    sweep = sorted({T} | {int(t) for t in args.sweep.split(",") if t.strip()}) if dev.type == "cuda" else [T]
    m = KimiMoE(cfg, layer.weights, layer.gate, layer.bias, shared=None, max_tokens=max(sweep))
    out = m(x)
    rel = ((out.float().cpu() - ref).norm() / ref.norm()).item()
    ok = rel < 2e-2
    print(f"\nfused op (torch.ops.k2kernels.fused_moe via KimiMoE, caller-owned workspace for {max(sweep)} tokens):")
    print(f"check vs the PyTorch reference composite: rel error {rel:.2e} ({'OK' if ok else 'MISMATCH'}; bound 2e-2)")
    if dev.type != "cuda":
        print("(CPU: the fused op is its reference here; timings, bandwidth and the roofline need a GPU)")
        if args.plot:
            print(f"--plot: skipped on CPU (no GPU timings to plot); {args.plot} not written")
        return ok

    E, H, I, k = cfg.experts, cfg.hidden, cfg.inter, cfg.top_k
    per_expert = sum(t[0].numel() * t.element_size() for t in (m.w13, m.w13_scale, m.w2, m.w2_scale))
    flush = torch.empty(64 << 20, dtype=torch.float32, device=dev).fill_(1.0)
    base = None
    if not args.no_baseline:
        need = 2 * E * 3 * I * H * 1.15
        free = torch.cuda.mem_get_info(dev)[0]
        if free > need:
            base = _bf16_weights(m)
        else:
            print(f"BF16 baseline skipped: needs ~{need / 1e9:.0f} GB, {free / 1e9:.0f} GB free (--no-baseline to silence)")
    rows = []
    for t in sweep:
        xt = x if t == T else torch.randn(t, H, device=dev).to(torch.bfloat16)
        logits = m.router_logits(xt)
        ids = torch.ops.k2kernels.topk_router(logits, m.e_score_correction_bias, k, cfg.scoring, 1, 1, True, 1.0)[1]
        active = int(torch.unique(ids).numel())
        graph = t <= GRAPH_MAX_T
        us = time_cuda(lambda: m.routed(xt, logits), graph=graph, flush=flush) * 1e6
        wbytes = active * per_expert
        act_bytes = t * k * (H + 2 * I + I + H) * 2 + 2 * t * H * 2
        flops = 2.0 * t * k * 3 * I * H
        r = dict(T=t, active=active, us=us, floor_us=wbytes / COPY_BPS * 1e6, tbs=(wbytes + act_bytes) / us / 1e6,
                 ai=flops / (wbytes + act_bytes), tflops=flops / us / 1e6)
        if base is not None:
            bus = time_cuda(lambda: torch_moe_bf16(xt, logits, m.e_score_correction_bias, *base, k,
                                                   cfg.routed_scaling_factor), graph=graph, flush=flush) * 1e6
            bbytes = active * 3 * I * H * 2 + act_bytes
            r.update(base_us=bus, base_ai=flops / bbytes, base_tflops=flops / bus / 1e6)
        if t == T:
            r["stages"] = {n: time_cuda(f, graph=graph, flush=flush) * 1e6 for n, f in _stages(m, xt, logits)}
        rows.append(r)

    r0 = next(r for r in rows if r["T"] == T)
    print(f"\nfused op per stage at T={T} (each alone, {'graph replay' if T <= GRAPH_MAX_T else 'eager'}, L2 evicted):")
    for n, us in r0["stages"].items():
        print(f"  {n:26s} {us:10.1f} us")
    print(f"  {'fused_moe (whole layer)':26s} {r0['us']:10.1f} us   (router gate GEMM excluded)")
    print(f"\n{'T':>5} {'experts':>7} {'fused_us':>9} {'floor_us':>8} {'x_floor':>7} {'TB/s':>6} {'%4.2TB/s':>8} "
          f"{'TFLOP/s':>8} {'bf16_us':>8} {'speedup':>7}")
    for r in rows:
        print(f"{r['T']:5d} {r['active']:7d} {r['us']:9.1f} {r['floor_us']:8.1f} {r['us'] / r['floor_us']:7.2f} "
              f"{r['tbs']:6.2f} {100 * r['tbs'] / (COPY_BPS / 1e12):8.1f} {r['tflops']:8.1f} "
              f"{r.get('base_us', float('nan')):8.1f} {r.get('base_us', float('nan')) / r['us']:7.2f}")
    L = cfg.layers
    print(f"\nestimated decode over {L} MoE layers at T={T} (MoE only; attention, dense layers, router GEMM excluded):")
    print(f"  fused NVFP4: {L * r0['us'] / 1e3:.2f} ms/step -> {T * 1e6 / (L * r0['us']):.1f} tok/s")
    if "base_us" in r0:
        print(f"  BF16 torch : {L * r0['base_us'] / 1e3:.2f} ms/step -> {T * 1e6 / (L * r0['base_us']):.1f} tok/s")
    if args.plot:
        _plot(rows, args.plot, torch.cuda.get_device_name(dev))
    return ok


def _plot(rows, path, gpu):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot: matplotlib is not installed; {path} not written (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    ais = [r["ai"] for r in rows] + [r["base_ai"] for r in rows if "base_ai" in r]
    lo, hi = min(ais) / 3, max(max(ais) * 3, BF16_TFLOPS / (COPY_BPS / 1e12) * 3)
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(BF16_TFLOPS, x * COPY_BPS / 1e12) for x in xs], "k-", lw=1,
            label="roofline: 4.2 TB/s, 767 TFLOP/s BF16")
    ax.plot([r["ai"] for r in rows], [r["tflops"] for r in rows], "o-", label="k2kernels fused_moe (NVFP4 W4A16)")
    if any("base_ai" in r for r in rows):
        b = [r for r in rows if "base_ai" in r]
        ax.plot([r["base_ai"] for r in b], [r["base_tflops"] for r in b], "s--", label="BF16 torch._grouped_mm composite")
    for r in rows:
        ax.annotate(f"T={r['T']}", (r["ai"], r["tflops"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"Kimi-K2 MoE layer on {gpu}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote roofline plot {path}")
