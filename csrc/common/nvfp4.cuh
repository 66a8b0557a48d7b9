// NVFP4 / FP8 element conversions on the device. These reproduce k2kernels/nvfp4.py bit for bit:
// the same round-to-nearest-even boundaries and the same fp32 operations in the same order.
#pragma once
#include <cuda_fp8.h>
#include <cstdint>

namespace k2k {

// fp32 -> E2M1 code (bit 3 = sign), RNE, saturating at +-6; NaN -> 0. Ties go to the even code:
// boundaries 0.25, 1.25, 2.5, 5 round ties down, 0.75, 1.75, 3.5 round them up.
__device__ __forceinline__ uint32_t e2m1_code(float x) {
  const float a = fabsf(x);
  uint32_t m = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f);
  const uint32_t sign = (signbit(x) && !isnan(x)) ? 8u : 0u;
  return m | sign;
}

__device__ __forceinline__ float e2m1_value(uint32_t code) {
  constexpr float kMag[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
  const float v = kMag[code & 7u];
  return (code & 8u) ? -v : v;
}

// fp32 -> e4m3 byte, RNE, saturating to +-448 (cvt.rn.satfinite); NaN -> 0x7F.
__device__ __forceinline__ uint8_t e4m3_satfinite(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float e4m3_to_float(uint8_t v) {
  __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
  return __half2float(__half(h));
}

}  // namespace k2k
