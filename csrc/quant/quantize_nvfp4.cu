// BF16 -> NVFP4 activation quantization (one thread per 16-element block; memory bound).
// Rounding rules and operation order follow k2kernels/nvfp4.py:quantize_blocks exactly.
#include "common/nvfp4.cuh"
#include "quant/quantize_nvfp4.h"

namespace k2k {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
quantize_nvfp4_kernel(const __nv_bfloat16* __restrict__ x, const float* __restrict__ global_scale,
                      uint8_t* __restrict__ packed, uint8_t* __restrict__ scales, int64_t n_blocks) {
  const float gs = *global_scale;
  for (int64_t b = blockIdx.x * int64_t(kThreads) + threadIdx.x; b < n_blocks; b += int64_t(gridDim.x) * kThreads) {
    // 16 bf16 = two 16-byte loads (K % 16 == 0 and a 16-byte aligned base keep every block aligned).
    const uint4* src = reinterpret_cast<const uint4*>(x + b * 16);
    uint4 raw[2] = {src[0], src[1]};
    const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(raw);
    float f[16];
    float amax = 0.f;
    bool finite = true;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      f[i] = __bfloat162float(v[i]);
      finite = finite && isfinite(f[i]);
      amax = fmaxf(amax, fabsf(f[i]));
    }
    // A non-finite block gets a NaN scale so NaN/inf propagates instead of being clipped to +-6.
    const float scale_f = finite ? amax / (gs * 6.0f) : __int_as_float(0x7fc00000);
    const uint8_t s8 = e4m3_satfinite(scale_f);
    const float sf = e4m3_to_float(s8);
    const float denom = sf * gs;
    const bool zero = !finite || sf == 0.f;
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      lo |= (zero ? 0u : e2m1_code(f[i] / denom)) << (4 * i);
      hi |= (zero ? 0u : e2m1_code(f[8 + i] / denom)) << (4 * i);
    }
    reinterpret_cast<uint2*>(packed)[b] = make_uint2(lo, hi);
    scales[b] = s8;
  }
}

}  // namespace

void launch_quantize_nvfp4(const __nv_bfloat16* x, const float* global_scale, uint8_t* packed,
                           uint8_t* scales, int64_t M, int64_t K, cudaStream_t stream) {
  const int64_t n_blocks = M * (K / 16);
  if (n_blocks == 0) return;
  const int64_t grid = (n_blocks + kThreads - 1) / kThreads;
  const int grid_capped = static_cast<int>(grid < 65536 * 8 ? grid : 65536 * 8);
  quantize_nvfp4_kernel<<<grid_capped, kThreads, 0, stream>>>(x, global_scale, packed, scales, n_blocks);
}

}  // namespace k2k
