// SiLU(gate) * up over the gate_up GEMM output [M, 2I] -> [M, I]; fp32 math with expf (not __expf)
// so the result matches torch's silu to an ulp before the bf16 rounding.
#include "fused_moe/fused_moe.h"
#include "common/pdl.cuh"
#include "fused_moe/vec.cuh"

namespace k2k {
namespace {

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void __launch_bounds__(fmoe::kThreads)
moe_silu_mul_kernel(const __nv_bfloat16* __restrict__ gu, __nv_bfloat16* __restrict__ out, int64_t M, int64_t I,
                    bool vec) {
  pdl_launch_dependents();   // the next kernel (a moe_gemm launched with PDL) may start its prologue now
  const int64_t c0 = int64_t(blockIdx.x) * fmoe::kColsPerBlock;
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const __nv_bfloat16* g = gu + r * 2 * I;
    const __nv_bfloat16* u = g + I;
    __nv_bfloat16* o = out + r * I;
    if (vec) {
      const int64_t c = c0 + int64_t(threadIdx.x) * fmoe::kVec;
      if (c < I) {
        float fg[8], fu[8];
        fmoe::unpack8(*reinterpret_cast<const uint4*>(g + c), fg);
        fmoe::unpack8(*reinterpret_cast<const uint4*>(u + c), fu);
#pragma unroll
        for (int i = 0; i < 8; ++i) fg[i] = silu_mul(fg[i], fu[i]);
        *reinterpret_cast<uint4*>(o + c) = fmoe::pack8(fg);
      }
    } else {
      for (int64_t c = c0 + threadIdx.x; c < c0 + fmoe::kColsPerBlock && c < I; c += fmoe::kThreads)
        o[c] = __float2bfloat16(silu_mul(__bfloat162float(g[c]), __bfloat162float(u[c])));
    }
  }
}

}  // namespace

void launch_moe_silu_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int64_t M, int64_t I, cudaStream_t stream) {
  if (M == 0 || I == 0) return;
  const bool vec = I % fmoe::kVec == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const dim3 grid(static_cast<unsigned>((I + fmoe::kColsPerBlock - 1) / fmoe::kColsPerBlock),
                  static_cast<unsigned>(M < fmoe::kMaxGridY ? M : fmoe::kMaxGridY));
  moe_silu_mul_kernel<<<grid, fmoe::kThreads, 0, stream>>>(gate_up, out, M, I, vec);
}

}  // namespace k2k
