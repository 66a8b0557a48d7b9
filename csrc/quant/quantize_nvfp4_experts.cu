// Per-expert BF16 -> NVFP4 activation quantization into the 128x4-swizzled scale layout, each
// expert's scales at its own 128-row-aligned block (what CUTLASS's SM1xx block-scaled grouped GEMM
// reads per group), optionally gathering rows by index so no permuted copy of x is made.
// Rounding and the NaN policy are exactly k2kernels/nvfp4.py:quantize_blocks (common/nvfp4.cuh).
#include "common/nvfp4.cuh"
#include "quant/quantize_nvfp4_experts.h"

namespace k2k {
namespace {

constexpr int kScanThreads = 1024;
constexpr int kThreads = 256;

__device__ __forceinline__ int64_t clamp_row(int64_t r, int64_t M) { return r < 0 ? 0 : (r > M ? M : r); }

__device__ __forceinline__ int64_t expert_rows(const int32_t* offsets, int e, int64_t M) {
  const int64_t r0 = clamp_row(offsets[e], M), r1 = clamp_row(offsets[e + 1], M);
  return r1 > r0 ? r1 - r0 : 0;
}

// sf_offsets[e] = sum_{j<e} round_up(M_j, 128): one block, a chunked scan (E is a few hundred).
__global__ void __launch_bounds__(kScanThreads)
sf_offsets_kernel(const int32_t* __restrict__ offsets, int E, int64_t M, int32_t* __restrict__ sf_offsets) {
  __shared__ int32_t warp_sums[kScanThreads / 32];
  __shared__ int32_t carry;
  if (threadIdx.x == 0) {
    carry = 0;
    sf_offsets[0] = 0;
  }
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int base = 0; base < E; base += kScanThreads) {
    const int e = base + threadIdx.x;
    int32_t v = e < E ? static_cast<int32_t>((expert_rows(offsets, e, M) + 127) / 128 * 128) : 0;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {          // inclusive warp scan
      const int32_t t = __shfl_up_sync(0xffffffffu, v, d);
      if (lane >= d) v += t;
    }
    if (lane == 31) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
      int32_t s = warp_sums[lane];
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int32_t t = __shfl_up_sync(0xffffffffu, s, d);
        if (lane >= d) s += t;
      }
      warp_sums[lane] = s;
    }
    __syncthreads();
    const int32_t incl = v + (warp > 0 ? warp_sums[warp - 1] : 0) + carry;
    if (e < E) sf_offsets[e + 1] = incl;
    __syncthreads();
    if (threadIdx.x == kScanThreads - 1) carry = incl;
    __syncthreads();
  }
}

// Largest e in [0, E] with table[e] <= p (table non-decreasing, table[0] = 0 <= p).
__device__ __forceinline__ int upper_index(const int32_t* __restrict__ table, int E, int64_t p) {
  int lo = 0, hi = E;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid] <= p) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// One thread per (padded scale row p, 16-element block c): quantizes the block of the row that p
// stands for, or writes the zero padding. Consecutive threads take consecutive c of one row, so the
// bf16 loads are contiguous and the scale bytes of a 4-column group land in one 32-bit word.
__global__ void __launch_bounds__(kThreads)
quantize_experts_kernel(const __nv_bfloat16* __restrict__ x, int64_t x_rows, const int32_t* __restrict__ row_idx,
                        const float* __restrict__ global_scale, bool gs_per_expert,
                        const int32_t* __restrict__ offsets, int E, const int32_t* __restrict__ sf_offsets,
                        uint8_t* __restrict__ packed, uint8_t* __restrict__ sf, int64_t M, int64_t K,
                        int64_t sf_rows) {
  const int64_t kb = K / 16, kb_pad = (kb + 3) / 4 * 4;
  const int64_t total = sf_rows * kb_pad;
  const int64_t sf_end = sf_offsets[E];
  const int64_t row_end = clamp_row(offsets[E], M);
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < total; i += int64_t(gridDim.x) * kThreads) {
    const int64_t p = i / kb_pad, c = i % kb_pad;
    // 128x4 swizzle (CUTLASS Sm1xxBlkScaledConfig, nvfp4.swizzle_scales): tiles row-major over
    // (rows/128, kb_pad/4); inside a tile, (r, c) -> (r % 32) * 16 + (r / 32) * 4 + c.
    const int64_t within = p % 128;
    const int64_t sf_pos = ((p / 128) * (kb_pad / 4) + c / 4) * 512 + (within % 32) * 16 + (within / 32) * 4 + c % 4;
    uint8_t s8 = 0;
    int64_t out_row = -1;          // packed row this thread writes (codes), if any
    bool quantize = false;
    int e = 0;
    if (p < sf_end) {
      e = upper_index(sf_offsets, E, p);
      const int64_t local = p - sf_offsets[e];
      if (local < expert_rows(offsets, e, M) && c < kb) {
        out_row = clamp_row(offsets[e], M) + local;
        quantize = true;
      }
    } else if (c < kb && row_end + (p - sf_end) < M) {
      out_row = row_end + (p - sf_end);      // a row outside every expert: codes 0
    }
    uint32_t lo = 0, hi = 0;
    if (quantize) {
      const int64_t src = row_idx ? static_cast<int64_t>(row_idx[out_row]) : out_row;
      if (src >= 0 && src < x_rows) {
        // 16 bf16 = two 16-byte loads (K % 16 == 0 and a 16-byte aligned base keep them aligned).
        const uint4* s = reinterpret_cast<const uint4*>(x + src * K + c * 16);
        uint4 raw[2] = {s[0], s[1]};
        const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(raw);
        const float gs = global_scale[gs_per_expert ? e : 0];
        float f[16];
        float amax = 0.f;
        bool finite = true;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          f[j] = __bfloat162float(v[j]);
          finite = finite && isfinite(f[j]);
          amax = fmaxf(amax, fabsf(f[j]));
        }
        // A non-finite block gets a NaN scale so NaN/inf propagates instead of being clipped to +-6.
        const float scale_f = finite ? amax / (gs * 6.0f) : __int_as_float(0x7fc00000);
        s8 = e4m3_satfinite(scale_f);
        const float sfv = e4m3_to_float(s8);
        const float denom = sfv * gs;
        if (finite && sfv != 0.f) {
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            lo |= e2m1_code(f[j] / denom) << (4 * j);
            hi |= e2m1_code(f[8 + j] / denom) << (4 * j);
          }
        }
      }
    }
    sf[sf_pos] = s8;
    if (out_row >= 0) reinterpret_cast<uint2*>(packed + out_row * (K / 2))[c] = make_uint2(lo, hi);
  }
}

}  // namespace

void launch_quantize_nvfp4_experts(const __nv_bfloat16* x, int64_t x_rows, const int32_t* row_idx,
                                   const float* global_scale, bool gs_per_expert, const int32_t* expert_offsets,
                                   int64_t E, uint8_t* packed, uint8_t* sf, int32_t* sf_offsets, int64_t M,
                                   int64_t K, cudaStream_t stream) {
  sf_offsets_kernel<<<1, kScanThreads, 0, stream>>>(expert_offsets, static_cast<int>(E), M, sf_offsets);
  const int64_t sf_rows = nvfp4_expert_sf_rows(M, E);
  const int64_t total = sf_rows * ((K / 16 + 3) / 4 * 4);
  if (total == 0) return;
  const int64_t grid = (total + kThreads - 1) / kThreads;
  const int grid_capped = static_cast<int>(grid < 65536 * 8 ? grid : 65536 * 8);
  quantize_experts_kernel<<<grid_capped, kThreads, 0, stream>>>(x, x_rows, row_idx, global_scale, gs_per_expert,
                                                                expert_offsets, static_cast<int>(E), sf_offsets,
                                                                packed, sf, M, K, sf_rows);
}

}  // namespace k2k
