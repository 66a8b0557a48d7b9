// One CTA per token: each thread converts 8 contiguous channels (16-byte load, 8-byte store)
// when D % 8 == 0, else one channel at a time. Memory bound; the division matches the reference.
#include "attention/kv_cache_append.h"
#include "common/nvfp4.cuh"

namespace k2k {
namespace {

constexpr int kThreads = 128;

template <int kVec>
__global__ void __launch_bounds__(kThreads)
kv_cache_append_kernel(const __nv_bfloat16* __restrict__ src, uint8_t* __restrict__ cache,
                       const int64_t* __restrict__ slot_mapping, const float* __restrict__ scale,
                       bool scale_per_head, int64_t H, int64_t D, int64_t num_slots) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0 || slot >= num_slots) return;
  const int64_t row = H * D;
  const __nv_bfloat16* in = src + t * row;
  uint8_t* out = cache + slot * row;
  for (int64_t i = int64_t(threadIdx.x) * kVec; i < row; i += int64_t(kThreads) * kVec) {
    const float s = scale[scale_per_head ? i / D : 0];     // kVec divides D: one head per vector
    if constexpr (kVec == 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(in + i);
      const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(&raw);
      uint32_t w[2] = {0, 0};
#pragma unroll
      for (int j = 0; j < 8; ++j) w[j / 4] |= uint32_t(e4m3_satfinite(__bfloat162float(v[j]) / s)) << (8 * (j % 4));
      *reinterpret_cast<uint2*>(out + i) = make_uint2(w[0], w[1]);
    } else {
      out[i] = e4m3_satfinite(__bfloat162float(in[i]) / s);
    }
  }
}

}  // namespace

void launch_kv_cache_append(const __nv_bfloat16* src, uint8_t* cache, const int64_t* slot_mapping,
                            const float* scale, bool scale_per_head, int64_t T, int64_t H, int64_t D,
                            int64_t num_slots, cudaStream_t stream) {
  if (T == 0) return;
  const bool vec = D % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(cache) % 8 == 0;
  if (vec) {
    kv_cache_append_kernel<8><<<T, kThreads, 0, stream>>>(src, cache, slot_mapping, scale, scale_per_head, H, D, num_slots);
  } else {
    kv_cache_append_kernel<1><<<T, kThreads, 0, stream>>>(src, cache, slot_mapping, scale, scale_per_head, H, D, num_slots);
  }
}

}  // namespace k2k
