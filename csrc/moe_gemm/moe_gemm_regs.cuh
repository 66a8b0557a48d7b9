// Swap-AB weight-streaming grouped GEMM, the first decode kernel (now a knob: K2K_MOE_GEMM_KERNEL=regs;
// the persistent kernel, moe_gemm_persist.cuh, replaced it as the default).
//
// Why swap-AB: with 1-16 tokens per expert the weights are the big operand, so they go on the MMA's
// M side (16 weight rows per warp) and the tokens on N (8 per MMA tile, 8 * kNT per pass). Each
// weight byte is read from HBM once per pass, straight into registers with 16-byte streaming loads
// (several in flight per thread, next super-step prefetched while the current one computes).
//
// K order: the dot product may run over K in any order as long as A and B use the same one. Thread
// (g = lane / 4, q = lane % 4) owns K range [128 q, 128 q + 128) of every 512-wide super-step, so it
// reads 64 contiguous weight bytes per row and 8 contiguous scale bytes, and needs no shuffles. Inside
// one 32-bit word (8 e2m1 nibbles n0..n7) the MMA register pairs are (n_i, n_{i+4}) because that
// pairing dequantizes with shifts and masks only; the activations are paired the same way with prmt.
//
// Dequantization: nibble s|eem placed at bf16 bits 15 and 8..6 is exactly e2m1 * 2^-126 (the e = 0
// codes become bf16 subnormals, which mul.bf16x2 keeps). Multiplying by the e4m3 block scale
// pre-scaled by 2^119 (exact in bf16, max 448 * 2^119 < bf16 max) gives e2m1 * scale * 2^-7, exact in
// bf16 (<= 6 significant bits). The 2^7 and the per-expert alpha are applied in the fp32 epilogue.
//
// Activations: per super-step a [8 * kNT tokens x 512] bf16 tile is staged in shared memory by
// cp.async (double-buffered, zero-filled past the expert's rows and past K) in "fragment order":
// 16-byte chunk (token tile t, word w, g, q) at ((t * 16 + w) * 32 + g * 4 + q), so the 32 lanes of a
// warp read 512 contiguous bytes (conflict-free).
//
// Scheduling without a host sync: grid.y = min(E, M) slots; slot j takes the j-th expert with rows
// (found by a ballot scan of the offsets), so CTAs of empty experts never start. grid.x tiles N by 64.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cstdint>

#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"
#include "moe_gemm/moe_gemm_mma.cuh"

namespace k2k {
namespace moe {

constexpr int kStreamWarps = 4;
constexpr int kStreamThreads = kStreamWarps * 32;
constexpr int kStreamRowsPerCta = kStreamWarps * 16;
constexpr int kSuperK = 512;                      // K per super-step (4 lanes x 128)
constexpr int kMaxExperts = kMaxExpertWords * 32;
// Static shared memory of the kernel as built (256 B of expert bitmask plus what the compiler adds;
// `python -m k2kernels.build --check` showed 1280 B for sm_90a and sm_120a), reserved in the budget.
constexpr int kStreamStaticSmemReserve = 2048;

template <int kNT>
constexpr int stream_smem_bytes() {                // two stages of [8 kNT tokens x 512] bf16
  return 2 * kNT * 8 * kSuperK * 2;
}

struct WeightStep {
  uint4 a[4], b[4];     // 64 bytes of rows g and g + 8
  uint2 sa, sb;         // their 8 block scales
};

template <int kLayout>
__device__ __forceinline__ void load_weight_step(const MoeGemmParams& p, int e, int nA, int nB,
                                                 const uint8_t* wA, const uint8_t* wB, int s, int q,
                                                 WeightStep& ws) {
  const int k0 = s * kSuperK + q * 128;
  if (k0 < p.K) {
    const uint8_t* pa = wA + k0 / 2;
    const uint8_t* pb = wB + k0 / 2;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      ws.a[i] = ld_stream_u4(pa + 16 * i);
      ws.b[i] = ld_stream_u4(pb + 16 * i);
    }
    const int kb = k0 / 16;
    if constexpr (kLayout == kScaleLinear) {
      ws.sa = __ldg(reinterpret_cast<const uint2*>(p.w_scale + scale_index<kLayout>(p, e, nA, kb)));
      ws.sb = __ldg(reinterpret_cast<const uint2*>(p.w_scale + scale_index<kLayout>(p, e, nB, kb)));
    } else {   // 8 blocks = two aligned groups of 4, each 4 contiguous bytes in a 128x4 tile
      ws.sa.x = __ldg(reinterpret_cast<const uint32_t*>(p.w_scale + scale_index<kLayout>(p, e, nA, kb)));
      ws.sa.y = __ldg(reinterpret_cast<const uint32_t*>(p.w_scale + scale_index<kLayout>(p, e, nA, kb + 4)));
      ws.sb.x = __ldg(reinterpret_cast<const uint32_t*>(p.w_scale + scale_index<kLayout>(p, e, nB, kb)));
      ws.sb.y = __ldg(reinterpret_cast<const uint32_t*>(p.w_scale + scale_index<kLayout>(p, e, nB, kb + 4)));
    }
  } else {     // past K (tail super-step): zero weights and scales give zero products
#pragma unroll
    for (int i = 0; i < 4; ++i) ws.a[i] = ws.b[i] = make_uint4(0, 0, 0, 0);
    ws.sa = ws.sb = make_uint2(0, 0);
  }
}

template <int kNT, int kLayout>
__device__ __forceinline__ void moe_gemm_regs_body(const MoeGemmParams& p) {
  extern __shared__ uint4 act_smem[];              // [2][kNT * 16 * 32] 16-byte chunks
  __shared__ uint32_t nz_words[kMaxExpertWords];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int n_cta = blockIdx.x * kStreamRowsPerCta;

  const int expert = slot_expert_and_zero_fill<kStreamThreads>(p, nz_words, n_cta, kStreamRowsPerCta);
  if (expert < 0) return;                          // fewer experts with rows than slots

  const int64_t row0 = clamped_offset(p, expert);
  const int count = static_cast<int>(clamped_offset(p, expert + 1) - row0);
  const float alpha = expert_alpha(p, expert) * kEpilogueShift;

  const int nA = n_cta + warp * 16 + g, nB = nA + 8;
  const int nA_c = min(nA, p.N - 1), nB_c = min(nB, p.N - 1);   // clamped for loads; stores check
  const uint8_t* wA = p.w + (int64_t(expert) * p.N + nA_c) * (p.K / 2);
  const uint8_t* wB = p.w + (int64_t(expert) * p.N + nB_c) * (p.K / 2);
  const int steps = (p.K + kSuperK - 1) / kSuperK;
  constexpr int kTokens = 8 * kNT;
  constexpr int kStageChunks = kNT * 16 * 32;

  for (int tg = 0; tg < count; tg += kTokens) {
    auto stage_act = [&](int s, int buf) {
      uint4* dst = act_smem + buf * kStageChunks;
#pragma unroll
      for (int i = tid; i < kTokens * 64; i += kStreamThreads) {
        const int tok = i >> 6, kc = i & 63;
        const int k = s * kSuperK + kc * 8;
        const bool valid = (tg + tok < count) && (k < p.K);
        const __nv_bfloat16* src = p.a + (valid ? (row0 + tg + tok) * p.K + k : 0);
        const int pos = (((tok >> 3) * 16 + (kc & 15)) * 32 + (tok & 7) * 4 + (kc >> 4));
        cp_async_16(dst + pos, src, valid ? 16 : 0);
      }
    };

    float acc[kNT][4];
#pragma unroll
    for (int t = 0; t < kNT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;

    stage_act(0, 0);
    cp_async_commit();
    WeightStep cur, nxt;
    load_weight_step<kLayout>(p, expert, nA_c, nB_c, wA, wB, 0, q, cur);

    for (int s = 0; s < steps; ++s) {
      const bool more = s + 1 < steps;
      if (more) stage_act(s + 1, (s + 1) & 1);
      cp_async_commit();
      if (more) load_weight_step<kLayout>(p, expert, nA_c, nB_c, wA, wB, s + 1, q, nxt);
      cp_async_wait<1>();
      __syncthreads();

      uint32_t scA[8], scB[8];
      convert_scales_n<8>(cur.sa, scA);
      convert_scales_n<8>(cur.sb, scB);
      const uint4* stage = act_smem + (s & 1) * kStageChunks + lane;
#pragma unroll
      for (int wd = 0; wd < 16; ++wd) {
        const uint4 va = cur.a[wd >> 2], vb = cur.b[wd >> 2];
        const uint32_t wa = (&va.x)[wd & 3], wb = (&vb.x)[wd & 3];
        uint32_t ra[4], rb[4];
        dequant_word(wa, scA[wd >> 1], ra);
        dequant_word(wb, scB[wd >> 1], rb);
#pragma unroll
        for (int t = 0; t < kNT; ++t) {
          const uint4 x = stage[(t * 16 + wd) * 32];
          const uint32_t b0 = __byte_perm(x.x, x.z, 0x5410), b1 = __byte_perm(x.x, x.z, 0x7632);
          const uint32_t b2 = __byte_perm(x.y, x.w, 0x5410), b3 = __byte_perm(x.y, x.w, 0x7632);
          mma_bf16_16816(acc[t], ra[0], rb[0], ra[1], rb[1], b0, b1);
          mma_bf16_16816(acc[t], ra[2], rb[2], ra[3], rb[3], b2, b3);
        }
      }
      __syncthreads();                               // stage (s & 1) is refilled at step s + 2
      if (more) cur = nxt;
    }

    // ---- epilogue: acc[t] = rows (nA, nB) x tokens (8 t + 2 q, + 1) --------------------------------
#pragma unroll
    for (int t = 0; t < kNT; ++t) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tok = tg + t * 8 + 2 * q + h;
        if (tok >= count) continue;
        __nv_bfloat16* orow = p.out + (row0 + tok) * p.N;
        if (nA < p.N) orow[nA] = __float2bfloat16(acc[t][h] * alpha);
        if (nB < p.N) orow[nB] = __float2bfloat16(acc[t][2 + h] * alpha);
      }
    }
  }
}

template <int kNT, int kLayout>
__global__ void __launch_bounds__(kStreamThreads) moe_gemm_regs_kernel(const MoeGemmParams p) {
  moe_gemm_regs_body<kNT, kLayout>(p);
}

// Same kernel asked to fit 4 CTAs per SM (<= 128 registers): with 8 active experts (T = 1) there are
// 512 CTAs, and 3 resident per H200 SM (148-156 registers) leave a 1.3-wave tail.
template <int kNT, int kLayout>
__global__ void __launch_bounds__(kStreamThreads, 4) moe_gemm_regs_kernel_4cta(const MoeGemmParams p) {
  moe_gemm_regs_body<kNT, kLayout>(p);
}

template <int kNT, int kLayout, int kMinBlocks>
constexpr auto regs_kernel() {
  if constexpr (kMinBlocks == 4) return moe_gemm_regs_kernel_4cta<kNT, kLayout>;
  else return moe_gemm_regs_kernel<kNT, kLayout>;
}

template <int kNT, int kMinBlocks>
bool launch_regs_mb(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  constexpr int smem = stream_smem_bytes<kNT>();
  if (smem > smem_limit) return false;
  const int slots = static_cast<int>(p.M < p.E ? p.M : p.E);
  if (slots == 0) return true;
  const dim3 grid((p.N + kStreamRowsPerCta - 1) / kStreamRowsPerCta, slots);
  if (p.scale_layout == kScaleLinear) {
    auto* k = regs_kernel<kNT, kScaleLinear, kMinBlocks>();
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, kStreamThreads, smem, stream>>>(p);
  } else {
    auto* k = regs_kernel<kNT, kScaleSwizzled, kMinBlocks>();
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, kStreamThreads, smem, stream>>>(p);
  }
  return true;
}

template <int kNT>
bool launch_regs(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return launch_regs_mb<kNT, 1>(p, smem_limit, stream);
}

}  // namespace moe
}  // namespace k2k
