// W4A4 emulation: quantize each activation row to NVFP4 with its expert's a_scale (the exact fp32
// operations of k2kernels/nvfp4.py:quantize_blocks, like csrc/quant/quantize_nvfp4.cu) and write back
// e2m1 * f32(block scale) as bf16 (exact: <= 6 significant bits, |x| in [2^-10, 2688]). The global
// a_scale is applied in the GEMM's fp32 epilogue, so the result equals SM120's W4A4 numerics.
#include "common/nvfp4.cuh"
#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"

namespace k2k {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
moe_act_fake_quant_kernel(const __nv_bfloat16* __restrict__ a, const float* __restrict__ a_scale, int per_expert,
                          const int32_t* __restrict__ offsets, int E, int64_t M, int K, __nv_bfloat16* __restrict__ a_q) {
  MoeGemmParams p{};
  p.expert_offsets = offsets;
  p.M = M;
  p.E = E;
  const int kblocks = K / 16;
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < M * kblocks; b += int64_t(gridDim.x) * kThreads) {
    const int64_t r = b / kblocks;
    const int e = moe::expert_of_row(p, r);
    const float gs = a_scale[per_expert ? (e < 0 ? 0 : e) : 0];
    float f[16];
    float amax = 0.f;
    bool finite = true;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      f[i] = __bfloat162float(a[b * 16 + i]);
      finite = finite && isfinite(f[i]);
      amax = fmaxf(amax, fabsf(f[i]));
    }
    const float scale_f = finite ? amax / (gs * 6.0f) : __int_as_float(0x7fc00000);
    const float sf = e4m3_to_float(e4m3_satfinite(scale_f));
    const float denom = sf * gs;
    const bool zero = !finite || sf == 0.f;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const float v = zero ? 0.f : e2m1_value(e2m1_code(f[i] / denom));
      a_q[b * 16 + i] = __float2bfloat16(v * sf);     // NaN scale -> NaN, like the reference
    }
  }
}

}  // namespace

void launch_moe_act_fake_quant(const __nv_bfloat16* a, const float* a_scale, int a_scale_per_expert,
                               const int32_t* expert_offsets, int E, int64_t M, int K, __nv_bfloat16* a_q,
                               cudaStream_t stream) {
  const int64_t n_blocks = M * (K / 16);
  if (n_blocks == 0) return;
  const int64_t grid = (n_blocks + kThreads - 1) / kThreads;
  const int grid_capped = static_cast<int>(grid < 65536 * 8 ? grid : 65536 * 8);
  moe_act_fake_quant_kernel<<<grid_capped, kThreads, 0, stream>>>(a, a_scale, a_scale_per_expert, expert_offsets,
                                                                  E, M, K, a_q);
}

}  // namespace k2k
