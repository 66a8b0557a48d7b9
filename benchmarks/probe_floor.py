"""What a call that does NO math costs in our benchmarks' own timing method: the floors behind issue 7's
decode target and issue 5's large-T router target.

Timer: bench_router.py's `Timer.cold_us` (one CUDA-graph replay after reading 256 MB, CUDA events,
median; bench_fused_moe.py times the same way). The probe kernel reads 16-byte words, 8 per loop
iteration per thread (ptxas keeps about 4 of them in flight: the floor it gives is, if anything, high).

`layer` (issue 7): the target is 1.15 x the weight-bytes floor: 198 MB (8 experts' NVFP4 gate_up + down
with their scales) at 4.2 TB/s = 47.2 us, so <= 54.3 us per call.
  launch     a 1-element torch kernel: the method's fixed cost for a graph of one kernel;
  stream     one kernel reading exactly the 8 experts' bytes (expert ids already in device memory);
  chain      k2kernels' topk_router + moe_align at T = 1, then the same stream kernel reading the experts
             the router picked (the reads cannot start before routing has finished).
`chain` is what routing with these router / align kernels and then reading each weight byte once costs;
the real op also dequantizes, multiplies, applies SiLU and combines. The reader here is launched plainly
after moe_align; fused_moe launches its GEMM with programmatic dependent launch, which can hide part of
the gap between align and the first weight read, so `chain` is not a strict lower bound.

`router` (issue 5): the target is 2 x the time to read the logits once at 4.2 TB/s; this reads the
logits of T tokens (E = 384, fp32 and bf16) once with the probe kernel (no outputs written), next to
the router itself.

    python3 benchmarks/probe_floor.py layer      # H200; builds a small probe kernel (and the routing family)
    python3 benchmarks/probe_floor.py router
"""
from __future__ import annotations

import os
import sys

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import k2kernels  # noqa: E402,F401
from k2kernels._paths import csrc_dir  # noqa: E402
from bench_router import Timer  # noqa: E402  (the same timing method as the benchmarks)

OPS = torch.ops.k2kernels
H, I, E, TOPK, RSF = 7168, 2048, 384, 8, 2.827
GATE_UP_BYTES = 2 * I * H // 2 + 2 * I * H // 16    # e2m1 codes + one e4m3 scale per 16
DOWN_BYTES = H * I // 2 + H * I // 16
COPY_TBS = 4.2

# Reads the selected experts' bytes as 16-byte words, 8 loads per iteration per thread, and folds them into
# one word per block (conditionally written, so the loads cannot be removed). Expert ids come from device
# memory; `blocks` (a multiple of the 8 slots) are split evenly over the slots.
CUDA_SRC = r"""
#include <torch/extension.h>
#include <cuda_runtime.h>
#include <ATen/cuda/CUDAContext.h>

#include "moe_gemm/moe_gemm_mma.cuh"   // ld_stream_u4: the decode GEMM's own streaming load

using k2k::moe::ld_stream_u4;

__global__ void __launch_bounds__(512) stream_experts(const uint8_t* gate_up, const uint8_t* down, const int* ids,
                                                      long long gu_bytes, long long dn_bytes, uint32_t* sink) {
  // blockIdx.y = routed slot: its expert's gate_up then down words, grid-strided over blockIdx.x.
  const long long e = ids[blockIdx.y];
  const uint4* gu = reinterpret_cast<const uint4*>(gate_up + e * gu_bytes);
  const uint4* dn = reinterpret_cast<const uint4*>(down + e * dn_bytes);
  const long long gu_words = gu_bytes / 16, total = gu_words + dn_bytes / 16;
  const long long stride = (long long)gridDim.x * blockDim.x;
  uint32_t acc = 0;
  long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  for (; w + 7 * stride < total; w += 8 * stride) {
    uint4 v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const long long x = w + j * stride;
      v[j] = ld_stream_u4(x < gu_words ? gu + x : dn + (x - gu_words));
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  for (; w < total; w += stride) {
    const uint4 v = ld_stream_u4(w < gu_words ? gu + w : dn + (w - gu_words));
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.y * gridDim.x + blockIdx.x] = acc;   // almost never; keeps the loads
}

void stream(torch::Tensor gate_up, torch::Tensor down, torch::Tensor ids, int64_t blocks, torch::Tensor sink) {
  for (const auto* t : {&gate_up, &down, &ids, &sink})
    TORCH_CHECK(t->is_cuda() && t->is_contiguous(), "stream: every tensor must be a contiguous CUDA tensor");
  TORCH_CHECK(gate_up.scalar_type() == torch::kUInt8 && down.scalar_type() == torch::kUInt8 && gate_up.dim() == 2 &&
              down.dim() == 2 && gate_up.size(0) == down.size(0), "gate_up, down: uint8 [experts, bytes each]");
  TORCH_CHECK(gate_up.size(1) % 16 == 0 && down.size(1) % 16 == 0, "gate_up, down: bytes per expert must be a multiple of 16");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(gate_up.data_ptr()) % 16 == 0 &&
              (down.numel() == 0 || reinterpret_cast<uintptr_t>(down.data_ptr()) % 16 == 0), "gate_up, down: 16-byte aligned");
  TORCH_CHECK(ids.scalar_type() == torch::kInt32 && ids.numel() > 0, "ids: int32, at least one expert");
  TORCH_CHECK(blocks > 0 && blocks % ids.numel() == 0, "blocks: a positive multiple of ids.numel() (blocks are split evenly over the experts)");
  TORCH_CHECK(sink.scalar_type() == torch::kInt32 && sink.numel() >= blocks, "sink: int32, one word per block");
  const dim3 grid(static_cast<unsigned>(blocks / ids.numel()), static_cast<unsigned>(ids.numel()));
  stream_experts<<<grid, 512, 0, at::cuda::getCurrentCUDAStream()>>>(
      gate_up.data_ptr<uint8_t>(), down.data_ptr<uint8_t>(), ids.data_ptr<int>(),
      gate_up.numel() / gate_up.size(0), down.numel() / down.size(0), reinterpret_cast<uint32_t*>(sink.data_ptr<int>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
"""


def build_probe():
    return load_inline("k2k_probe_floor", cpp_sources="void stream(torch::Tensor gate_up, torch::Tensor down, "
                      "torch::Tensor ids, int64_t blocks, torch::Tensor sink);", cuda_sources=CUDA_SRC,
                      functions=["stream"], extra_cuda_cflags=["-O3"], extra_include_paths=[str(csrc_dir())],
                      verbose=False)


def layer(mod, timer):
    torch.manual_seed(0)
    # Every expert's bytes, as a real layer holds them (9.5 GB): random, so nothing is special about them.
    gate_up = torch.randint(0, 256, (E, GATE_UP_BYTES), dtype=torch.uint8, device="cuda")
    down = torch.randint(0, 256, (E, DOWN_BYTES), dtype=torch.uint8, device="cuda")
    sink = torch.zeros(4096, dtype=torch.int32, device="cuda")
    logits = torch.randn(1, E, device="cuda")
    bias = torch.randn(E, device="cuda") * 0.1
    fixed_ids = torch.randperm(E, device="cuda")[:TOPK].int().contiguous()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    layer_bytes = TOPK * (GATE_UP_BYTES + DOWN_BYTES)
    floor = layer_bytes / (COPY_TBS * 1e6)
    tiny = torch.zeros(1, device="cuda")

    def chain(blocks):
        _, ids = OPS.topk_router(logits, bias, TOPK, "sigmoid", 1, 1, True, RSF)
        OPS.moe_align(ids, E, 1, None)
        mod.stream(gate_up, down, ids.reshape(-1), blocks, sink)

    print(f"{torch.cuda.get_device_name()}; layer bytes {layer_bytes / 1e6:.1f} MB; floor at {COPY_TBS} TB/s "
          f"{floor:.1f} us; issue 7 target (1.15x) {1.15 * floor:.1f} us", flush=True)
    print(f"launch (1-element kernel): {timer.cold_us(lambda: tiny.add_(1)):.2f} us", flush=True)
    print(f"router + align alone:      {timer.cold_us(lambda: OPS.moe_align(OPS.topk_router(logits, bias, TOPK, 'sigmoid', 1, 1, True, RSF)[1], E, 1, None)):.2f} us", flush=True)
    print(f"{'blocks/SM':>9}{'stream us':>11}{'TB/s':>7}{'chain us':>10}{'x floor':>9}", flush=True)
    for per_sm in (2, 4, 8):
        blocks = sms * per_sm
        st = timer.cold_us(lambda: mod.stream(gate_up, down, fixed_ids, blocks, sink))
        ch = timer.cold_us(lambda: chain(blocks))
        print(f"{per_sm:>9}{st:>11.2f}{layer_bytes / st / 1e6:>7.2f}{ch:>10.2f}{ch / floor:>9.3f}", flush=True)


def router(mod, timer):
    torch.manual_seed(0)
    bias = torch.randn(E, device="cuda") * 0.1
    sink = torch.zeros(4096, dtype=torch.int32, device="cuda")
    slot = torch.zeros(1, dtype=torch.int32, device="cuda")
    none = torch.empty(1, 0, dtype=torch.uint8, device="cuda")
    blocks = torch.cuda.get_device_properties(0).multi_processor_count * 4
    print(f"{'dtype':<9}{'T':>6}{'read us':>9}{'TB/s':>7}{'router us':>11}{'x read':>8}{'4.2TB/s us':>12}", flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        for T in (4096, 16384, 65536):
            logits = torch.randn(T, E, device="cuda").to(dtype)
            raw = logits.view(torch.uint8).reshape(1, -1)
            read = timer.cold_us(lambda: mod.stream(raw, none, slot, blocks, sink))
            ours = timer.cold_us(lambda: OPS.topk_router(logits, bias, TOPK, "sigmoid", 1, 1, True, RSF))
            nbytes = raw.numel()
            print(f"{str(dtype)[6:]:<9}{T:>6}{read:>9.2f}{nbytes / read / 1e6:>7.2f}{ours:>11.2f}{ours / read:>8.2f}"
                  f"{nbytes / (COPY_TBS * 1e6):>12.2f}", flush=True)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "layer"
    if what not in ("layer", "router") or len(sys.argv) > 2:
        raise SystemExit(f"usage: probe_floor.py [layer|router]; got {sys.argv[1:]!r}")
    if not torch.cuda.is_available():
        raise SystemExit("probe_floor.py measures a GPU: no CUDA device is visible")
    mod, timer = build_probe(), Timer()
    (layer if what == "layer" else router)(mod, timer)


if __name__ == "__main__":
    main()
