"""python -m k2kernels: run a Kimi-K2 MoE layer through the k2kernels ops and check it.

On a GPU: the real Kimi-K2 shapes (E=384, H=7168, I=2048, top-8). On CPU: a small layer of the same
structure through the references. Prints which implementation ran each op, per-stage time, and the
error against the same layer computed by the PyTorch references in fp32 on the same NVFP4 weights.
Then runs the same layer through the fused op (torch.ops.k2kernels.fused_moe, via KimiMoE) and checks
it too; on a GPU it times the fused op and each of its stages (CUDA-graph replay, L2 evicted), prints
effective bandwidth, % of the weight-bytes roofline and an estimated decode tok/s over all MoE layers
vs a BF16 torch baseline (torch._grouped_mm on the same weights in BF16); --plot FILE writes a
roofline PNG (matplotlib).
"""
from __future__ import annotations

import argparse
import sys

import torch

from . import load_kernels, reference
from .moe_layer import PRESETS, MoELayer, moe_forward

COPY_BW = 4.2e12   # measured H200 device-copy bandwidth, bytes/s (shared/docs/gpu.md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m k2kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model shapes (default: kimi-k2 on a GPU, tiny on CPU)")
    p.add_argument("--tokens", type=int, default=4, help="tokens in the batch (decode-sized by default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--plot", default=None, metavar="FILE", help="write a roofline PNG (GPU timings; needs matplotlib)")
    p.add_argument("--sweep", default="", help="GPU: extra token counts to time for the roofline, e.g. 1,8,64,512")
    p.add_argument("--no-baseline", action="store_true", help="GPU: skip the BF16 torch baseline (needs ~34 GB at Kimi shapes)")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    preset = args.preset or ("kimi-k2" if dev.type == "cuda" else "tiny")
    cfg = PRESETS[preset]
    print(f"k2kernels demo: {preset} MoE layer (H={cfg.hidden}, I={cfg.inter}, E={cfg.experts}, "
          f"top-{cfg.top_k}, {cfg.scoring}), T={args.tokens}, device={dev}")
    if dev.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(dev)}")
        report = load_kernels()
        print("what runs each op on this GPU:")
        for op, how in report.items():
            print(f"  {op:18s} {how}")
    else:
        print("CPU: every op runs its PyTorch reference (k2kernels/reference/)")

    layer = MoELayer.random(cfg, device=dev)
    x = torch.randn(args.tokens, cfg.hidden, device=dev).to(torch.bfloat16)
    moe_forward(layer, x)                      # warm-up (first CUDA call builds/loads kernels)
    timings: dict[str, float] = {}
    out = moe_forward(layer, x, timings)

    # the same layer through the PyTorch references, on the same device and the same NVFP4 weights
    ref = moe_forward(layer, x, impl=reference).float().cpu()
    rel = ((out.float().cpu() - ref).norm() / ref.norm()).item()
    print("\nper stage (synchronized, one call):")
    total = 0.0
    for stage, sec in timings.items():
        total += sec
        print(f"  {stage:26s} {sec * 1e6:10.1f} us")
    print(f"  {'total':26s} {total * 1e6:10.1f} us")
    if dev.type == "cuda":
        w = layer.weights
        used = torch.unique(torch.ops.k2kernels.topk_router(
            x.float() @ layer.gate.float().t(), layer.bias, cfg.top_k, cfg.scoring, 1, 1, True, 1.0)[1]).numel()
        per_expert = sum(t[0].numel() * t.element_size() for t in (w.w13, w.w13_scale, w.w2, w.w2_scale))
        gemm_s = timings.get("moe_gemm gate_up", 0) + timings.get("moe_gemm down", 0)
        bytes_read = used * per_expert
        print(f"\nexperts touched: {used}; weight bytes read by the two GEMMs: {bytes_read / 1e6:.1f} MB")
        print(f"GEMM effective bandwidth: {bytes_read / gemm_s / 1e12:.2f} TB/s "
              f"({100 * bytes_read / gemm_s / COPY_BW:.0f} % of the 4.2 TB/s H200 copy ceiling)")
        print(f"weight-bytes floor for this layer: {bytes_read / COPY_BW * 1e6:.1f} us; "
              f"{cfg.layers} MoE layers -> decode upper bound {1 / (cfg.layers * total):.1f} tok/s at this T "
              f"(MoE only, this unfused composite)")
    if dev.type == "cpu":
        print("\n(on CPU both sides are the references, so the check below only proves the pipeline runs)")
    ok = rel < 2e-2
    print(f"\ncheck vs PyTorch reference (fp32, same NVFP4 weights): rel error {rel:.2e} "
          f"({'OK' if ok else 'MISMATCH'}; bound 2e-2 from bf16 rounding of the intermediate activations)")
    from ._demo_fused import run_fused
    ok_fused = run_fused(cfg, layer, x, ref, dev, args)
    return 0 if ok and ok_fused else 1


if __name__ == "__main__":
    sys.exit(main())
