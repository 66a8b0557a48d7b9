"""How fast can ANY fused_moe reach at T = 1, in bench_fused_moe.py's own timing method? (issue 7)

Issue 7's decode target is 1.15 x the weight-bytes floor: 198 MB (8 experts' NVFP4 gate_up + down with
their scales) at 4.2 TB/s = 47.2 us, so <= 54.3 us per call. This probe measures, with the same timer
(one CUDA-graph replay after reading 256 MB, CUDA events, median), what a call costs that does NO math:

  launch     a 1-element torch kernel: the method's fixed cost for a graph of one kernel;
  stream     one kernel reading exactly the 8 experts' bytes (expert ids already in device memory);
  chain      k2kernels' topk_router + moe_align at T = 1, then the same stream kernel reading the experts
             the router picked (the reads cannot start before routing has finished).

`chain` is a lower bound for a fused_moe built from these router / align kernels and a GEMM that reads
each weight byte once at the stream kernel's rate; the real op also dequantizes, multiplies, applies
SiLU and combines.

    python3 benchmarks/probe_layer_floor.py        # H200; builds the routing family and a small probe kernel
"""
from __future__ import annotations

import os
import statistics
import sys

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import k2kernels  # noqa: E402,F401

OPS = torch.ops.k2kernels
H, I, E, TOPK, RSF = 7168, 2048, 384, 8, 2.827
GATE_UP_BYTES = 2 * I * H // 2 + 2 * I * H // 16    # e2m1 codes + one e4m3 scale per 16
DOWN_BYTES = H * I // 2 + H * I // 16
COPY_TBS = 4.2

# Reads the selected experts' bytes as 16-byte words, 8 loads in flight per thread, and folds them into
# one word per block (conditionally written, so the loads cannot be removed). Expert ids come from device
# memory; `blocks` (a multiple of the 8 slots) are split evenly over the slots.
CUDA_SRC = r"""
#include <torch/extension.h>
#include <cuda_runtime.h>
#include <ATen/cuda/CUDAContext.h>

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

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
      v[j] = ld_stream(x < gu_words ? gu + x : dn + (x - gu_words));
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  for (; w < total; w += stride) {
    const uint4 v = ld_stream(w < gu_words ? gu + w : dn + (w - gu_words));
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.y * gridDim.x + blockIdx.x] = acc;   // almost never; keeps the loads
}

void stream(torch::Tensor gate_up, torch::Tensor down, torch::Tensor ids, int64_t blocks, torch::Tensor sink) {
  TORCH_CHECK(ids.scalar_type() == torch::kInt32 && ids.is_contiguous(), "ids: int32, contiguous");
  TORCH_CHECK(sink.numel() >= blocks, "sink: one word per block");
  const dim3 grid(static_cast<unsigned>(blocks / ids.numel()), static_cast<unsigned>(ids.numel()));
  stream_experts<<<grid, 512, 0, at::cuda::getCurrentCUDAStream()>>>(
      gate_up.data_ptr<uint8_t>(), down.data_ptr<uint8_t>(), ids.data_ptr<int>(),
      gate_up.numel() / gate_up.size(0), down.numel() / down.size(0), reinterpret_cast<uint32_t*>(sink.data_ptr<int>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
"""


class Timer:
    """bench_fused_moe.py's method: one graph replay after reading 256 MB (no dirty lines in L2), events, median."""

    def __init__(self):
        self.flush_buf = torch.empty(256 * 2 ** 20 // 4, dtype=torch.float32, device="cuda").uniform_()

    def cold_us(self, fn, iters=50):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        times = []
        for _ in range(iters):
            self.sink = self.flush_buf.sum()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3)
        return statistics.median(times)


def main():
    mod = load_inline("k2k_probe_layer_floor", cpp_sources="void stream(torch::Tensor gate_up, torch::Tensor down, "
                      "torch::Tensor ids, int64_t blocks, torch::Tensor sink);", cuda_sources=CUDA_SRC,
                      functions=["stream"], extra_cuda_cflags=["-O3"], verbose=False)
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
    timer = Timer()
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


if __name__ == "__main__":
    main()
