// Swap-AB weight-streaming grouped GEMM with a cp.async shared-memory pipeline (64-token passes when the
// tile kernel cannot run, and K2K_MOE_GEMM_KERNEL=pipe; its layouts and math are what the persistent
// kernel builds on).
//
// Why swap-AB: with 1-30 tokens per expert the weights are the big operand, so they go on the MMA's
// M side (16 weight rows per warp, 64 per CTA) and the tokens on N (8 per MMA tile, 8 * kNT per pass).
// Each weight byte is read from HBM once per pass.
//
// Why a shared-memory pipeline: decode is a pure streaming problem, and HBM needs ~50+ KB in flight
// per SM. Loading weights into registers caps that at what registers can hold (a register-streaming
// first version reached ~2 TB/s on the H200; removed since); cp.async into kStages shared-memory stages keeps
// (kStages - 1) stages of weights, scales and activations in flight while one is computed.
//
// K order: the dot product may run over K in any order as long as A and B use the same one. Per step
// of kStepK, thread (g = lane / 4, q = lane % 4) owns K range [q kStepK / 4, (q + 1) kStepK / 4), so it
// reads whole 16-byte chunks of its two weight rows and of its token's activations, no shuffles.
// Weight rows are stored with an XOR swizzle of 16-byte chunks so these reads are conflict-free;
// activations in "fragment order": chunk (token tile t, word w, g, q) at ((t * WPT + w) * 32 + g * 4 + q),
// i.e. a warp reads 512 contiguous bytes.
//
// Past K and past an expert's rows the copies zero-fill (src-size 0), so tails need no branches.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"
#include "moe_gemm/moe_gemm_mma.cuh"

namespace k2k {
namespace moe {

constexpr int kPipeWarps = 4;                        // default warps per CTA (16 weight rows each)
// Static shared memory (expert bitmask + compiler's own), reserved on top of the dynamic stages.
constexpr int kPipeStaticSmemReserve = 2048;

// kWarps warps per CTA, 16 weight rows each. More rows per CTA share one staged activation tile: the
// activations are re-read from L2 once per CTA, so M * K * 2 * N / kRows bytes per call (the prefill cost).
template <int kNT, int kStepK, int kStages, int kWarps = kPipeWarps>
struct PipeCfg {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = kWarps * 16;           // weight rows (outputs along N) per CTA
  static constexpr int kWpt = kStepK / 32;            // 32-bit words (8 elements) per thread per row per step
  static constexpr int kCpt = kWpt / 4;               // 16-byte chunks per thread per row per step
  static constexpr int kCpr = kStepK / 32;            // 16-byte chunks per weight row per step
  static constexpr int kSb = kStepK / 16;             // scale bytes per row per step
  static constexpr int kSbt = kSb / 4;                // scale bytes per thread per row per step
  static constexpr int kWeightBytes = kRows * kStepK / 2;
  static constexpr int kScaleBytes = kRows * kSb;
  static constexpr int kActBytes = 8 * kNT * kStepK * 2;
  static constexpr int kStageBytes = kWeightBytes + kScaleBytes + kActBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static_assert(kStepK == 128 || kStepK == 256 || kStepK == 512, "step K");
  static_assert(kStages >= 2, "pipeline needs two stages");
};

// Physical 16-byte chunk of logical chunk c in weight row r (conflict-free LDS.128 for the read pattern).
template <int kCpr>
__device__ __forceinline__ int weight_chunk_swizzle(int r, int c) {
  if constexpr (kCpr == 16) return c ^ ((((c >> 3) & 1) << 1) ^ (r & 1));
  else if constexpr (kCpr == 8) return c ^ (r & 1);
  else return c;
}

template <int kNT, int kStepK, int kStages, int kLayout, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
moe_gemm_pipe_kernel(const MoeGemmParams p) {
  using Cfg = PipeCfg<kNT, kStepK, kStages, kWarps>;
  constexpr int kPipeThreads = Cfg::kThreads;
  constexpr int kPipeRows = Cfg::kRows;
  extern __shared__ __align__(16) uint8_t pipe_smem[];
  __shared__ uint32_t nz_words[kMaxExpertWords];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;
  const int n_cta = blockIdx.x * kPipeRows;

  const int expert = slot_expert_and_zero_fill<kPipeThreads>(p, nz_words, n_cta, kPipeRows);
  if (expert < 0) return;
  const int64_t row0 = clamped_offset(p, expert);
  const int count = static_cast<int>(clamped_offset(p, expert + 1) - row0);
  const float alpha = expert_alpha(p, expert) * kEpilogueShift;
  const int steps = (p.K + kStepK - 1) / kStepK;
  const int kblocks = p.K / 16;
  constexpr int kTokens = 8 * kNT;

  for (int tg = 0; tg < count; tg += kTokens) {
    auto load_stage = [&](int s, int buf) {
      uint8_t* st = pipe_smem + buf * Cfg::kStageBytes;
      // weights: kPipeRows x kCpr chunks
#pragma unroll
      for (int i = tid; i < kPipeRows * Cfg::kCpr; i += kPipeThreads) {
        const int r = i / Cfg::kCpr, c = i % Cfg::kCpr;
        const int n = min(n_cta + r, p.N - 1);
        const int k = s * kStepK + c * 32;
        const bool valid = k < p.K;
        const uint8_t* src = p.w + weight_index<kLayout>(p, expert, n, valid ? k / 2 : 0);
        cp_async_16(st + (r * Cfg::kCpr + weight_chunk_swizzle<Cfg::kCpr>(r, c)) * 16, src, valid ? 16 : 0);
      }
      // scales: kPipeRows x kSb bytes, row-major (8-byte pieces linear, 4-byte groups swizzled,
      // 16 bytes tiled)
      uint8_t* ss = st + Cfg::kWeightBytes;
      constexpr int kPiece = kLayout == kScaleLinear ? 8 : (kLayout == kTiled ? (Cfg::kSb < 16 ? Cfg::kSb : 16) : 4);
      constexpr int kPieces = Cfg::kSb / kPiece;
#pragma unroll
      for (int i = tid; i < kPipeRows * kPieces; i += kPipeThreads) {
        const int r = i / kPieces, j = i % kPieces;
        const int n = min(n_cta + r, p.N - 1);
        const int kb = s * Cfg::kSb + j * kPiece;
        const bool valid = kb < kblocks;
        const uint8_t* src = p.w_scale + scale_index<kLayout>(p, expert, n, valid ? kb : 0);
        if constexpr (kPiece == 16) cp_async_16(ss + r * Cfg::kSb + j * kPiece, src, valid ? kPiece : 0);
        else cp_async_small<kPiece>(ss + r * Cfg::kSb + j * kPiece, src, valid ? kPiece : 0);
      }
      // activations: kTokens x (kStepK / 8) chunks in fragment order
      uint8_t* sa = ss + Cfg::kScaleBytes;
      constexpr int kAch = kStepK / 8;
#pragma unroll
      for (int i = tid; i < kTokens * kAch; i += kPipeThreads) {
        const int tok = i / kAch, kc = i % kAch;
        const int k = s * kStepK + kc * 8;
        const bool valid = (tg + tok < count) && (k < p.K);
        const __nv_bfloat16* src = p.a + (valid ? (row0 + tg + tok) * p.K + k : 0);
        const int pos = ((tok >> 3) * Cfg::kWpt + kc % Cfg::kWpt) * 32 + (tok & 7) * 4 + kc / Cfg::kWpt;
        cp_async_16(sa + pos * 16, src, valid ? 16 : 0);
      }
    };

    float acc[kNT][4];
#pragma unroll
    for (int t = 0; t < kNT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < steps) load_stage(s, s);
      cp_async_commit();
    }

    const int rA = warp * 16 + g, rB = rA + 8;
    for (int s = 0; s < steps; ++s) {
      cp_async_wait<kStages - 2>();
      __syncthreads();                       // stage s visible; stage s - 1 fully consumed by all warps
      {
        const int sn = s + kStages - 1;
        if (sn < steps) load_stage(sn, sn % kStages);
        cp_async_commit();
      }
      const uint8_t* st = pipe_smem + (s % kStages) * Cfg::kStageBytes;
      const uint4* wsm = reinterpret_cast<const uint4*>(st);
      uint4 wa[Cfg::kCpt], wb[Cfg::kCpt];
#pragma unroll
      for (int i = 0; i < Cfg::kCpt; ++i) {
        const int c = q * Cfg::kCpt + i;
        wa[i] = wsm[rA * Cfg::kCpr + weight_chunk_swizzle<Cfg::kCpr>(rA, c)];
        wb[i] = wsm[rB * Cfg::kCpr + weight_chunk_swizzle<Cfg::kCpr>(rB, c)];
      }
      const uint8_t* ss = st + Cfg::kWeightBytes;
      uint2 sa2 = make_uint2(0, 0), sb2 = make_uint2(0, 0);
      if constexpr (Cfg::kSbt == 8) {
        sa2 = *reinterpret_cast<const uint2*>(ss + rA * Cfg::kSb + q * 8);
        sb2 = *reinterpret_cast<const uint2*>(ss + rB * Cfg::kSb + q * 8);
      } else if constexpr (Cfg::kSbt == 4) {
        sa2.x = *reinterpret_cast<const uint32_t*>(ss + rA * Cfg::kSb + q * 4);
        sb2.x = *reinterpret_cast<const uint32_t*>(ss + rB * Cfg::kSb + q * 4);
      } else {
        sa2.x = *reinterpret_cast<const uint16_t*>(ss + rA * Cfg::kSb + q * 2);
        sb2.x = *reinterpret_cast<const uint16_t*>(ss + rB * Cfg::kSb + q * 2);
      }
      uint32_t scA[Cfg::kSbt], scB[Cfg::kSbt];
      convert_scales_n<Cfg::kSbt>(sa2, scA);
      convert_scales_n<Cfg::kSbt>(sb2, scB);
      const uint4* act = reinterpret_cast<const uint4*>(ss + Cfg::kScaleBytes) + lane;
#pragma unroll
      for (int wd = 0; wd < Cfg::kWpt; ++wd) {
        const uint32_t wA = (&wa[wd >> 2].x)[wd & 3], wB = (&wb[wd >> 2].x)[wd & 3];
        uint32_t ra[4], rb[4];
        dequant_word(wA, scA[wd >> 1], ra);
        dequant_word(wB, scB[wd >> 1], rb);
#pragma unroll
        for (int t = 0; t < kNT; ++t) {
          const uint4 x = act[(t * Cfg::kWpt + wd) * 32];
          const uint4 b = activation_pairs<kPairedCodes<kLayout>>(x);
          mma_bf16_16816(acc[t], ra[0], rb[0], ra[1], rb[1], b.x, b.y);
          mma_bf16_16816(acc[t], ra[2], rb[2], ra[3], rb[3], b.z, b.w);
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();                           // the next token group refills every stage

    // epilogue: acc[t] = weight rows (nA, nB) x tokens (8 t + 2 q, + 1)
    const int nA = n_cta + rA, nB = n_cta + rB;
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

template <int kNT, int kStepK, int kStages, int kWarps = kPipeWarps>
bool launch_pipe(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  using Cfg = PipeCfg<kNT, kStepK, kStages, kWarps>;
  constexpr int smem = Cfg::kSmemBytes;
  if (smem > smem_limit) return false;
  const int slots = static_cast<int>(p.M < p.E ? p.M : p.E);
  if (slots == 0) return true;
  const dim3 grid((p.N + Cfg::kRows - 1) / Cfg::kRows, slots);
  if (p.scale_layout == kScaleLinear) {
    auto* k = moe_gemm_pipe_kernel<kNT, kStepK, kStages, kScaleLinear, kWarps>;
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, Cfg::kThreads, smem, stream>>>(p);
  } else if (p.scale_layout == kTiled) {
    auto* k = moe_gemm_pipe_kernel<kNT, kStepK, kStages, kTiled, kWarps>;
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, Cfg::kThreads, smem, stream>>>(p);
  } else {
    auto* k = moe_gemm_pipe_kernel<kNT, kStepK, kStages, kScaleSwizzled, kWarps>;
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, Cfg::kThreads, smem, stream>>>(p);
  }
  return true;
}

}  // namespace moe
}  // namespace k2k
