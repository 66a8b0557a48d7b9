// Device helpers shared by the moe_gemm kernels: clamped offsets, scale addressing, alpha, row->expert.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "common/device_info.h"   // current_device_cc_major: the launchers' arch checks
#include "moe_gemm/moe_gemm.h"

namespace k2k {
namespace moe {

// Offsets are clamped to [0, M] so that any offsets (even decreasing or out of range) stay in bounds.
__device__ __forceinline__ int64_t clamped_offset(const MoeGemmParams& p, int e) {
  const int64_t v = p.expert_offsets[e];
  return v < 0 ? 0 : (v > p.M ? p.M : v);
}

// Byte index of the e4m3 scale of (expert e, weight row n, 16-element block kb).
// Swizzled: CUTLASS Sm1xx 128x4 tiles; byte (r, c) of a tile sits at (r % 32) * 16 + (r / 32 % 4) * 4 + c.
template <int kLayout>
__device__ __forceinline__ int64_t scale_index(const MoeGemmParams& p, int e, int n, int kb) {
  if constexpr (kLayout == kScaleLinear) {
    return (int64_t(e) * p.N + n) * (p.K / 16) + kb;
  } else if constexpr (kLayout == kTiled) {    // [E][N/64][K/512][64 rows][32 bytes]
    constexpr int kRowBytes = kTileK / 16;
    const int64_t tile = (int64_t(e) * (p.N / kTileN) + n / kTileN) * (p.K / kTileK) + kb / kRowBytes;
    return tile * (kTileN * kRowBytes) + (n % kTileN) * kRowBytes + kb % kRowBytes;
  } else {
    const int64_t base = int64_t(e) * p.n_pad * p.kb_pad;
    const int64_t tile = int64_t(n >> 7) * (p.kb_pad >> 2) + (kb >> 2);
    return base + tile * 512 + (n & 31) * 16 + ((n >> 5) & 3) * 4 + (kb & 3);
  }
}

// Byte index of the packed codes of (expert e, weight row n, byte kbyte = k / 2).
template <int kLayout>
__device__ __forceinline__ int64_t weight_index(const MoeGemmParams& p, int e, int n, int kbyte) {
  if constexpr (kLayout == kTiled) {           // [E][N/64][K/512][64 rows][256 bytes]
    constexpr int kRowBytes = kTileK / 2;
    const int64_t tile = (int64_t(e) * (p.N / kTileN) + n / kTileN) * (p.K / kTileK) + kbyte / kRowBytes;
    const int b = kbyte % kRowBytes;
    // 16-byte chunk c of an odd row sits at c ^ 1 (the bulk-copy kernel's conflict-free read order)
    return tile * (kTileN * kRowBytes) + (n % kTileN) * kRowBytes + (((b >> 4) ^ (n & 1)) << 4) + (b & 15);
  } else {
    return (int64_t(e) * p.N + n) * (p.K / 2) + kbyte;
  }
}

// Whether a layout stores each 32-bit word's codes in MMA pair order, K 0 2 4 6 1 3 5 7
// (k2kernels/moe_gemm_prepare.py: NIBBLE_ORDER): the tiled layout does, the checkpoint layouts do not.
template <int kLayout>
constexpr bool kPairedCodes = kLayout == kTiled;

// The 4-bit code of (expert e, weight row n, K element k).
template <int kLayout>
__device__ __forceinline__ uint32_t code_at(const MoeGemmParams& p, int e, int n, int k) {
  int pos = k & 7;                             // nibble position inside the word of K elements k & ~7
  if constexpr (kPairedCodes<kLayout>) pos = (pos >> 1) + ((pos & 1) << 2);
  const uint8_t byte = p.w[weight_index<kLayout>(p, e, n, (k & ~7) / 2 + pos / 2)];
  return pos & 1 ? byte >> 4 : byte & 0xFu;
}

// fp32 epilogue scale of expert e: w_alpha[e], times a_scale[e] when the activations were quantized.
__device__ __forceinline__ float expert_alpha(const MoeGemmParams& p, int e) {
  float alpha = p.w_alpha[e];
  if (p.a_scale != nullptr) alpha *= p.a_scale[p.a_scale_per_expert ? e : 0];
  return alpha;
}

// The expert owning row r: the last e with offset[e] <= r (binary search over clamped offsets;
// with well-formed offsets this is the segment holding r). Returns -1 if r precedes offset[0] or
// follows offset[E] (such rows belong to no expert and are written as zeros).
__device__ __forceinline__ int expert_of_row(const MoeGemmParams& p, int64_t r) {
  if (r < clamped_offset(p, 0) || r >= clamped_offset(p, p.E)) return -1;
  int lo = 0, hi = p.E - 1;                 // invariant: offset[lo] <= r
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (clamped_offset(p, mid) <= r) lo = mid; else hi = mid - 1;
  }
  return lo;
}


constexpr int kMaxExpertWords = 64;               // E <= 2048 (one bit per expert in shared memory)

// Writes the bitmask of experts with rows (offset[e+1] > offset[e]); threads 0 .. kThreads - 1 call
// it (whole warps), and a barrier must follow before anyone reads the mask.
template <int kThreads>
__device__ __forceinline__ void mark_expert_words(const MoeGemmParams& p, uint32_t* nz_words) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int words = (p.E + 31) / 32;
  for (int base = 0; base < words * 32; base += kThreads) {
    const int e = base + tid;
    const bool nz = e < p.E && clamped_offset(p, e + 1) > clamped_offset(p, e);
    const uint32_t bits = __ballot_sync(0xFFFFFFFFu, nz);
    const int wi = (base >> 5) + warp;
    if (lane == 0 && wi < words) nz_words[wi] = bits;
  }
}

// How many experts the bitmask marks.
__device__ __forceinline__ int count_active_experts(const MoeGemmParams& p, const uint32_t* nz_words) {
  const int words = (p.E + 31) / 32;
  int active = 0;
  for (int wi = 0; wi < words; ++wi) active += __popc(nz_words[wi]);
  return active;
}

// Fills the bitmask of experts with rows; returns how many. All threads of the CTA call it (it
// synchronizes).
template <int kThreads>
__device__ __forceinline__ int mark_active_experts(const MoeGemmParams& p, uint32_t* nz_words) {
  mark_expert_words<kThreads>(p, nz_words);
  __syncthreads();
  return count_active_experts(p, nz_words);
}

// The j-th set bit of the expert bitmask (-1 if it has fewer).
__device__ __forceinline__ int nth_active_expert(const uint32_t* nz_words, int words, int j) {
  for (int wi = 0; wi < words; ++wi) {
    uint32_t m = nz_words[wi];
    const int c = __popc(m);
    if (j < c) {
      for (int t = 0; t < j; ++t) m &= m - 1;
      return wi * 32 + __ffs(m) - 1;
    }
    j -= c;
  }
  return -1;
}

// Scheduling without a host sync: grid.y = min(E, M) slots; slot j takes the j-th expert that has rows
// (ballot over "offset[e+1] > offset[e]", then the j-th set bit), so CTAs of empty experts never run.
// CTAs of slot 0 also write zeros into rows [0, offset[0]) and [offset[E], M) of their columns
// [n_cta, n_cta + cols) (rows that belong to no expert). Returns the expert, or -1 (nothing to do).
// Must be called by all threads of the CTA (it synchronizes).
template <int kThreads>
__device__ __forceinline__ int slot_expert_and_zero_fill(const MoeGemmParams& p, uint32_t* nz_words, int n_cta,
                                                         int cols) {
  const int tid = threadIdx.x;
  mark_active_experts<kThreads>(p, nz_words);
  if (blockIdx.y == 0) {
    const int64_t lo = clamped_offset(p, 0), hi = clamped_offset(p, p.E);
    const int ncols = min(cols, p.N - n_cta);
    const int64_t tail = p.M - hi;
    for (int64_t i = tid; i < (lo + tail) * ncols; i += kThreads) {
      const int64_t r = i / ncols;
      const int c = static_cast<int>(i % ncols);
      const int64_t row = r < lo ? r : hi + (r - lo);
      p.out[row * p.N + n_cta + c] = __float2bfloat16(0.f);
    }
  }
  return nth_active_expert(nz_words, (p.E + 31) / 32, blockIdx.y);
}

}  // namespace moe
}  // namespace k2k
