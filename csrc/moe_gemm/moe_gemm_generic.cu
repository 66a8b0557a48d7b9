// Plain fallback for shapes the fast kernels do not take (K % 128 != 0, unaligned pointers): one
// thread per output element, fp32 dot product over the dequantized weights. Correct, not fast.
#include "common/nvfp4.cuh"
#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"

namespace k2k {
namespace {

constexpr int kThreads = 128;

template <int kLayout>
__global__ void __launch_bounds__(kThreads) moe_gemm_generic_kernel(const MoeGemmParams p) {
  const int n = blockIdx.y * kThreads + threadIdx.x;    // rows on grid.x: M may exceed 65535
  const int64_t r = blockIdx.x;
  if (n >= p.N) return;
  const int e = moe::expert_of_row(p, r);
  float acc = 0.f;
  if (e >= 0) {
    const __nv_bfloat16* arow = p.a + r * p.K;
    for (int kb = 0; kb < p.K / 16; ++kb) {
      const float s = e4m3_to_float(p.w_scale[moe::scale_index<kLayout>(p, e, n, kb)]);
      float part = 0.f;
      for (int i = 0; i < 16; ++i)
        part += e2m1_value(moe::code_at<kLayout>(p, e, n, kb * 16 + i)) * __bfloat162float(arow[kb * 16 + i]);
      acc += part * s;
    }
    acc *= moe::expert_alpha(p, e);
  }
  p.out[r * p.N + n] = __float2bfloat16(acc);
}

}  // namespace

void launch_moe_gemm_generic(const MoeGemmParams& p, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return;
  const dim3 grid(static_cast<unsigned>(p.M), (p.N + kThreads - 1) / kThreads);
  if (p.scale_layout == kScaleLinear) {
    moe_gemm_generic_kernel<kScaleLinear><<<grid, kThreads, 0, stream>>>(p);
  } else if (p.scale_layout == kTiled) {
    moe_gemm_generic_kernel<kTiled><<<grid, kThreads, 0, stream>>>(p);
  } else {
    moe_gemm_generic_kernel<kScaleSwizzled><<<grid, kThreads, 0, stream>>>(p);
  }
}

}  // namespace k2k
