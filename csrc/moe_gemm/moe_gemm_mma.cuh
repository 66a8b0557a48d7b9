// mma.sync / cp.async / NVFP4 dequantization primitives shared by the moe_gemm streaming kernels.
//
// Dequantization: nibble s|eem placed at bf16 bits 15 and 8..6 is exactly e2m1 * 2^-126 (the e = 0
// codes become bf16 subnormals, which mul/fma.bf16x2 keep). Multiplying by the e4m3 block scale
// pre-scaled by 2^119 (exact in bf16, max 448 * 2^119 < bf16 max) gives e2m1 * scale * 2^-7, exact in
// bf16 (<= 6 significant bits). The 2^7 and the per-expert alpha are applied in the fp32 epilogue.
// Inside one 32-bit word (8 nibbles n0..n7 from the low bits) the MMA register pairs are (n_i, n_{i+4}):
// that pairing needs only shifts and masks. Row-major codes (n_j = K element j) then need the
// activations paired the same way (prmt); the tiled layout stores K 0 2 4 6 1 3 5 7, so the registers
// hold the K pairs (2i, 2i+1) the activations already have (activation_pairs).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cstdint>

namespace k2k {
namespace moe {

constexpr float kScaleShift = 0x1p119f;     // applied to block scales; the epilogue multiplies by 2^7
constexpr float kEpilogueShift = 128.f;

__device__ __forceinline__ uint4 ld_stream_u4(const void* ptr) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(ptr));
  return v;
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
// 4- or 8-byte copy through L1 (.ca: .cg only takes 16 bytes); src_bytes = 0 writes zeros.
template <int kBytes>
__device__ __forceinline__ void cp_async_small(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(s), "l"(gmem), "n"(kBytes), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(kPending)); }

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a);
  __nv_bfloat162 y = *reinterpret_cast<__nv_bfloat162*>(&b);
  __nv_bfloat162 r = __hmul2(x, y);
  return *reinterpret_cast<uint32_t*>(&r);
}

// One word of 8 nibbles -> 4 bf16x2 registers (n_i low, n_{i+4} high), times the block scale.
// Register i: mask nibbles n_i and n_{i+4} (at bits 4i' and 16 + 4i', i' = i % 2, of w or w >> 8), then
// one multiply moves each to both bit 6 (e2m1 magnitude -> bf16 bits 8..6) and bit 12 (sign -> bit 15):
// the two shifted copies do not overlap, so the product has no carries. Per register: 2 logic ops and
// one IMAD (the decode kernels are issue-bound; IMAD runs on the FMA pipe, logic ops on the slower ALU).
__device__ __forceinline__ void dequant_word(uint32_t w, uint32_t scale2, uint32_t r[4]) {
  constexpr uint32_t kKeep = 0x81C081C0u;
  const uint32_t hi = w >> 8;
  r[0] = bf16x2_mul(((w & 0x000F000Fu) * 0x1040u) & kKeep, scale2);
  r[1] = bf16x2_mul(((w & 0x00F000F0u) * 0x104u) & kKeep, scale2);
  r[2] = bf16x2_mul(((hi & 0x000F000Fu) * 0x1040u) & kKeep, scale2);
  r[3] = bf16x2_mul(((hi & 0x00F000F0u) * 0x104u) & kKeep, scale2);
}

// The MMA B registers for one weight word's 8 K elements (x = 8 bf16 activations in K order), paired the
// way dequant_word pairs the word's codes: (k_i, k_{i+4}) for row-major codes (linear / swizzled
// layouts: 4 byte permutes), (k_2i, k_{2i+1}) for the tiled layout, whose words store their codes in
// the order K 0 2 4 6 1 3 5 7 (k2kernels/moe_gemm_prepare.py): the activations as loaded.
template <bool kPairedCodes>
__device__ __forceinline__ uint4 activation_pairs(uint4 x) {
  if constexpr (kPairedCodes) {
    return x;
  } else {
    return make_uint4(__byte_perm(x.x, x.z, 0x5410), __byte_perm(x.x, x.z, 0x7632), __byte_perm(x.y, x.w, 0x5410),
                      __byte_perm(x.y, x.w, 0x7632));
  }
}

__device__ __forceinline__ void mma_bf16_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}


// n e4m3 scale bytes (n = 2, 4 or 8, packed little-endian in s) -> n bf16x2 registers {s*2^119, s*2^119}.
template <int kCount>
__device__ __forceinline__ void convert_scales_n(uint2 s, uint32_t* out) {
#pragma unroll
  for (int h = 0; h < kCount / 2; ++h) {
    const uint32_t word = h < 2 ? s.x : s.y;
    const auto two = static_cast<__nv_fp8x2_storage_t>((word >> (16 * (h & 1))) & 0xFFFFu);
    const __half2 hv = __half2(__nv_cvt_fp8x2_to_halfraw2(two, __NV_E4M3));
    const float2 f = __half22float2(hv);
    const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * kScaleShift, f.y * kScaleShift);
    const uint32_t u = *reinterpret_cast<const uint32_t*>(&b);
    out[2 * h] = __byte_perm(u, u, 0x1010);
    out[2 * h + 1] = __byte_perm(u, u, 0x3232);
  }
}

}  // namespace moe
}  // namespace k2k
