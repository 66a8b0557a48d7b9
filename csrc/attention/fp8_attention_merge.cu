// Flash-decoding merge: combine the key-range splits of the split layouts (16-row, rows8, latent, prefill).
// Split s wrote its normalized output O_s and lse_s = log2 sum_k 2^(s_k) (log2 domain, -inf if it
// saw no key); out = sum_s 2^(lse_s - M) O_s / sum_s 2^(lse_s - M), M = max_s lse_s. One thread per
// 4 output channels; memory bound and small next to the KV read. With lse != nullptr the row's first
// thread also writes the merged natural-log LSE, (M + log2 sum_s 2^(lse_s - M)) ln 2.
#include <cuda_bf16.h>

#include "attention/fp8_attention.h"

namespace k2k {
namespace {

constexpr int kMergeThreads = 256;

__global__ void __launch_bounds__(kMergeThreads)
fp8_attention_merge_kernel(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                           __nv_bfloat16* __restrict__ out, float* __restrict__ lse, int splits, int64_t rows,
                           int DV) {
  const int per_row = DV / 4;
  const int64_t gid = int64_t(blockIdx.x) * kMergeThreads + threadIdx.x;
  const int64_t row = gid / per_row;
  const int c = int(gid % per_row) * 4;
  if (row >= rows) return;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, part_lse[s * rows + row]);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float wsum = 0.f;
  if (M != -INFINITY) {
    for (int s = 0; s < splits; ++s) {
      const float w = exp2f(part_lse[s * rows + row] - M);
      if (w > 0.f) {
        const float4 v = *reinterpret_cast<const float4*>(part_o + (s * rows + row) * DV + c);
        acc.x += w * v.x; acc.y += w * v.y; acc.z += w * v.z; acc.w += w * v.w;
        wsum += w;
      }
    }
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  const __nv_bfloat162 lo = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
  const __nv_bfloat162 hi = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
  uint2 pk;
  pk.x = *reinterpret_cast<const uint32_t*>(&lo);
  pk.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(out + row * DV + c) = pk;
  if (lse != nullptr && c == 0) lse[row] = wsum > 0.f ? (M + __log2f(wsum)) * kLn2 : -INFINITY;
}

}  // namespace

cudaError_t launch_fp8_attention_merge(const float* part_o, const float* part_lse, __nv_bfloat16* out, float* lse,
                                       int splits, int64_t rows, int DV, cudaStream_t stream) {
  const int64_t threads = rows * (DV / 4);
  if (threads == 0) return cudaSuccess;
  const int64_t blocks = (threads + kMergeThreads - 1) / kMergeThreads;
  fp8_attention_merge_kernel<<<dim3(static_cast<unsigned>(blocks)), kMergeThreads, 0, stream>>>(
      part_o, part_lse, out, lse, splits, rows, DV);
  return cudaGetLastError();
}

}  // namespace k2k
