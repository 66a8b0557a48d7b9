// Device helpers shared by the two top-k router kernels (topk_router.cu: warp per token;
// topk_router_block.cu: block per token). reference/router.py is the spec of the numbers.
#pragma once
#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

namespace k2k {
namespace router {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float sanitize(float x) {
  return fminf(fmaxf(x, -FLT_MAX), FLT_MAX);     // fmaxf(NaN, -FLT_MAX) == -FLT_MAX
}

// Monotone float -> uint32 map (negative: flip all bits; positive: flip the sign bit), 2 instructions.
// Finite c maps to >= 0x00800000, so 0 is free to mean "excluded". c is never -0 here (c = s + b with
// s >= +0, and +0 + -0 = +0), so equal values get equal keys.
__device__ __forceinline__ uint32_t order_key(float c) {
  const uint32_t u = __float_as_uint(c);
  return u ^ (uint32_t(int32_t(u) >> 31) | 0x80000000u);
}

// 1 / (1 + e^-x) with the approximate divide (2 ulp; no IEEE-division slow path). e^-x = inf
// (x <= -88.7) gives 0, as the reference's sigmoid does up to denormals. e^-x = 2^(-x log2 e) by
// ex2.approx.ftz: the value __expf gives (one MUFU.EX2) except below 2^-126, where __expf's denormal
// scaling (three more instructions) cannot change 1 + e^-x == 1. Only the NaN -> -FLT_MAX part of
// sanitize matters here (+inf and FLT_MAX both give 1).
__device__ __forceinline__ float sigmoid(float x) {
  float e;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(fmaxf(x, -FLT_MAX) * -1.4426950408889634f));
  return __fdividef(1.f, 1.f + e);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, d));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(kFull, v, d);
  return v;
}

__device__ __forceinline__ float load1(const float* p) { return *p; }
__device__ __forceinline__ float load1(const __nv_bfloat16* p) { return __bfloat162float(*p); }

}  // namespace router
}  // namespace k2k
