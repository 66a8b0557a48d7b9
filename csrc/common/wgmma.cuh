// Warpgroup MMA (wgmma, sm_90a) helpers shared by the Hopper kernels: moe_gemm_wgmma.cuh and
// fp8_attention_prefill_wgmma.cuh. Each kernel picks its CuTe RS atoms (A from registers, B from shared
// memory); this header builds the B descriptors and issues the atoms.
#pragma once
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>

#include <cstdint>
#include <utility>

namespace k2k {

#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
// Descriptor of an operand in CuTe's canonical 128-byte-swizzle layout (16-byte chunk c of row r at
// c ^ (r % 8), 1024-byte aligned; cute/atom/mma_traits_sm90_gmma.hpp): K-major, leading_bytes is unused
// (pass 16) and stride_bytes is the distance between 8-row groups; MN-major, leading_bytes is the
// distance between 64-element MN blocks and stride_bytes the distance between groups of 8 K rows.
__device__ __forceinline__ uint64_t sw128_descriptor(const void* smem, int leading_bytes, int stride_bytes) {
  cute::GmmaDescriptor d;
  d.desc_ = 0;
  d.bitfield.start_address_ = static_cast<uint16_t>(static_cast<uint32_t>(__cvta_generic_to_shared(smem)) >> 4);
  d.bitfield.leading_byte_offset_ = static_cast<uint16_t>(leading_bytes >> 4);
  d.bitfield.stride_byte_offset_ = static_cast<uint16_t>(stride_bytes >> 4);
  d.bitfield.base_offset_ = 0;
  d.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return d.desc_;
}

// acc = (accumulate ? acc : 0) + A (4 registers) x B (descriptor) with the RS atom Op, whose
// accumulators CuTe takes one by one (I = 0 .. N / 2 - 1).
template <class Op, size_t... I>
__device__ __forceinline__ void wgmma_rs(float* acc, const uint32_t (&a)[4], uint64_t desc, bool accumulate,
                                         std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], desc, acc[I]...,
          accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

// Keeps the compiler from moving accesses to these accumulators across the asynchronous wgmmas.
template <size_t... I>
__device__ __forceinline__ void wgmma_fence(float* acc, std::index_sequence<I...>) {
  (cute::warpgroup_fence_operand(acc[I]), ...);
}
#endif

}  // namespace k2k
