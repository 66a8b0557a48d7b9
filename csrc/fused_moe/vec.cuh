// 8 x bf16 <-> 8 x fp32 for the 16-byte vector paths of the fused_moe kernels.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

namespace k2k {
namespace fmoe {

constexpr int kThreads = 256;
constexpr int kVec = 8;                                 // bf16 per 16-byte vector
constexpr int64_t kColsPerBlock = int64_t(kThreads) * kVec;   // columns one block covers per row

__device__ __forceinline__ void unpack8(const uint4& v, float f[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__device__ __forceinline__ uint4 pack8(const float f[8]) {
  uint4 v;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return v;
}

// Grid shape shared by the row kernels: x = column chunks of kColsPerBlock, y (and z) = rows.
// gridDim.y is limited to 65535, so rows are split as y * 65535-stride loops inside the kernels.
constexpr unsigned kMaxGridY = 65535;

}  // namespace fmoe
}  // namespace k2k
