// Prefill grouped GEMM for sm_90a: warpgroup MMA (wgmma) with the NVFP4 weights dequantized in registers.
//
// Why: the portable tile kernel (moe_gemm_tile.cuh) runs mma.sync at 221 TFLOP/s at T = 4096 on the
// H200, where torch._grouped_mm (BF16, wgmma) reaches 303 (benchmarks/RESULTS.md). wgmma is Hopper's
// full-rate tensor path; SM120 has none, so the tile kernel stays the portable path. Measured (H200,
// tenth session): gate_up T = 4096 5.52 ms (1.15x torch._grouped_mm; the tile kernel 8.8 ms), T = 16384
// 18.1 ms (0.95x). Nsight Compute on a four-warpgroup variant before the last change: tensor pipe 40 %
// busy, issue slots 45 %, ~53 instructions per 16-K slice of a warp against ~48 tensor cycles of its
// wgmma (m64n96k16).
//
// Built for sm_90a only: the kernel body needs wgmma (CUTE_ARCH_MMA_SM90A_ENABLED); other archs get an
// empty stub that the launcher never starts (compute capability 9 only), and a plain sm_90 build, whose
// stub a Hopper GPU would run, is a compile error below (k2kernels/_build.py builds sm_90 as sm_90a).
//
// Layout (swap-AB, like the decode kernels): the MMA's M side is 64 weight rows per warpgroup (A from
// registers), its N side kTok tokens (B from shared memory), K the hidden dimension. A CTA = two
// warpgroups = 128 weight rows x kTok tokens of one expert; both multiply the same activation stage.
// Four warpgroups (fewer activation bytes per FLOP, 512 threads) measured no faster (64 / 96 tokens,
// T = 1024 .. 16384, within +-3 %, tenth session). Per 64-K stage:
//   - activations: kTok rows x 64 bf16 = 128 bytes per row by cp.async, 16-byte chunk c of row r at
//     c ^ (r % 8) (the 128-byte swizzle wgmma reads; stage base 1024-byte aligned);
//   - codes: the tiled layout's 32 bytes of each weight row (k2kernels/moe_gemm_prepare.py; weight_index
//     undoes its odd-row chunk swap), 128 rows x 32 bytes; scales: 4 e4m3 bytes per row.
// A fragment of the m64nNk16 wgmma = mma.sync's m16n8k16 A fragment per warp: thread (g, q) holds
// rows g and g + 8 of its warp's 16 at K pairs (2q, 2q + 1) and (2q + 8, 2q + 9) of the 16-K slice.
// In the tiled layout a word holds 8 K in the order 0 2 4 6 1 3 5 7, so pair q of a word is its nibbles
// (q, q + 4): word 2j gives K (16j + 2q, +1), word 2j + 1 gives (16j + 8 + 2q, +1). Each pair is
// dequantized like dequant_word (moe_gemm_mma.cuh): e2m1 * 2^-126 by mask and multiply, times the block
// scale * 2^119; the epilogue applies 2^7 and alpha. Every code is dequantized once per CTA.
//
// Pipeline: kStages cp.async stages, kStages - 2 in flight ahead of the one multiplied. Each 16-K slice
// is one wgmma, committed alone; after it the warpgroup waits until at most 3 are pending, so the slice
// whose A registers it dequantizes next (one of 4 fragments, used round-robin) has been read, while
// three wgmmas keep the tensor cores busy (CUTLASS's RS mixed-input mainloop does the same). One
// barrier per stage, after its last wgmma is issued: it publishes stage s + 1 and frees stage s - 1's
// buffer (no warpgroup has wgmmas of stage s - 1 pending by then) for the next refill.
//
// Scheduling as the tile kernel: grid.x = 128-row N tiles, grid.y = an upper bound on the token tiles;
// CTA y takes the y-th (expert, token tile) (find_token_tile); CTAs past the last exit at once.
// Needs the tiled layout (N % 64 == 0, K % 512 == 0), 16-byte aligned a, w, w_scale.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>
#include <utility>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "k2kernels moe_gemm: build Hopper as sm_90a (the wgmma prefill kernel needs it); plain sm_90 would run an empty kernel"
#endif

#include <cute/arch/mma_sm90_gmma.hpp>

#include "common/wgmma.cuh"
#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"
#include "moe_gemm/moe_gemm_mma.cuh"
#include "moe_gemm/moe_gemm_tile.cuh"

namespace k2k {
namespace moe {

constexpr int kWgStepK = 64;
// Static shared memory: find_token_tile's scan storage, rounded up to the 1024-byte alignment of the
// dynamic area that follows it: 3072 B as the JIT builds it (python -m k2kernels.build --check; a bare
// nvcc -O3 compile reports 2048), more than the tile kernel's kTileStaticSmemReserve.
constexpr int kWgStaticSmemReserve = 3072;

template <int kTok, int kStages>
struct WgmmaCfg {
  static constexpr int kThreads = kTileThreads;                    // two warpgroups
  static constexpr int kRows = 128;                                // weight rows per CTA: 64 per warpgroup
  static_assert(kTok % 8 == 0 && kTok >= 8 && kTok <= 256, "wgmma N");
  static_assert(kStages >= 3, "refills stage s + kStages - 2 while stages s - 1 and s are read");
  static constexpr int kActBytes = kTok * kWgStepK * 2;            // bf16, 128-byte rows
  static constexpr int kCodeBytes = kRows * kWgStepK / 2;          // 32 bytes per weight row
  static constexpr int kScaleBytes = kRows * kWgStepK / 16;        // 4 bytes per weight row
  static constexpr int kStageBytes = (kActBytes + kCodeBytes + kScaleBytes + 1023) / 1024 * 1024;
  static constexpr int kScratchBytes = kThreads / 32 * 256;        // per warp: 16 rows x 4 converted scales
  static constexpr int kSmemBytes = kStages * kStageBytes + kScratchBytes;
  static constexpr int kAccRegs = kTok / 2;                        // 64 x kTok fp32 over 128 threads
};

#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
template <int kTok>
struct WgmmaOp;
template <>
struct WgmmaOp<128> {
  using Op = cute::SM90::GMMA::MMA_64x128x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;
};
template <>
struct WgmmaOp<96> {
  using Op = cute::SM90::GMMA::MMA_64x96x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;
};
template <>
struct WgmmaOp<64> {
  using Op = cute::SM90::GMMA::MMA_64x64x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;
};

// Pair q of a tiled-layout word (its nibbles q and q + 4: two consecutive K) as bf16x2 times the scale.
__device__ __forceinline__ uint32_t dequant_pair(uint32_t w, int shift, uint32_t scale2) {
  return bf16x2_mul((((w >> shift) & 0x000F000Fu) * 0x1040u) & 0x81C081C0u, scale2);
}
#endif

template <int kTok, int kStages>
__global__ void __launch_bounds__(kTileThreads, 1) moe_gemm_wgmma_kernel(const MoeGemmParams p) {
#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
  using Cfg = WgmmaCfg<kTok, kStages>;
  constexpr int kThreads = Cfg::kThreads, kRows = Cfg::kRows;
  // 1024-byte aligned: the 128-byte swizzle repeats every 8 rows, and wgmma's descriptors (base offset 0)
  // assume each stage's activation tile starts on that period.
  extern __shared__ __align__(1024) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (tid == 0 && (static_cast<uint32_t>(__cvta_generic_to_shared(smem)) & 1023u) != 0) __trap();
  const int n0 = blockIdx.x * kRows;

  if (blockIdx.y == 0) zero_rows_outside_experts(p, n0, kRows, tid, kThreads);
  int expert, rows;
  int64_t row0;
  if (!find_token_tile<kTok>(p, blockIdx.y, expert, row0, rows)) return;
  const int steps = p.K / kWgStepK;

  // This thread's copies, fixed for the CTA; stage s adds its K offset. Activations: chunk i = tid + j *
  // kThreads is row i / 8, 16-byte chunk i % 8 (rows past the tile's read nothing and zero-fill).
  // Codes: row tid / 2, half tid % 2 of its 32 bytes; in the tiled layout stage s sits (s / 8) 64 x 512
  // tiles on and (s % 8) * 32 bytes into each row (the odd-row chunk swap stays inside the 32 bytes).
  // Scales: row tid (tid < kRows), (s / 8) tiles on and (s % 8) * 4 bytes in.
  constexpr int kActIters = (kTok * 8 + kThreads - 1) / kThreads;
  const __nv_bfloat16* act_src[kActIters];
  uint32_t act_dst[kActIters], act_bytes[kActIters];
#pragma unroll
  for (int j = 0; j < kActIters; ++j) {
    const int i = tid + j * kThreads, r = i >> 3, c = i & 7;
    const bool valid = i < kTok * 8 && r < rows;
    act_src[j] = valid ? p.a + (row0 + r) * p.K + c * 8 : p.a;
    act_dst[j] = tile_chunk(r, c);
    act_bytes[j] = valid ? 16 : 0;
  }
  static_assert(kRows * 2 == kThreads, "one code chunk per thread");
  const int code_n = min(n0 + (tid >> 1), p.N - 1), scale_n = min(n0 + tid, p.N - 1);
  const uint8_t* code_src = p.w + weight_index<kTiled>(p, expert, code_n, (tid & 1) * 16);
  const uint8_t* scale_src = p.w_scale + scale_index<kTiled>(p, expert, scale_n, 0);
  constexpr int64_t kCodeTile = kTileN * kTileK / 2, kScaleTile = kTileN * kTileK / 16;

  auto load_stage = [&](int s) {
    uint8_t* st = smem + (s % kStages) * Cfg::kStageBytes;
    const int k0 = s * kWgStepK;
#pragma unroll
    for (int j = 0; j < kActIters; ++j)
      if (kTok * 8 % kThreads == 0 || tid + j * kThreads < kTok * 8)
        cp_async_16(st + act_dst[j], act_src[j] + (act_bytes[j] ? k0 : 0), act_bytes[j]);
    const int64_t tile = s >> 3, in_tile = s & 7;
    cp_async_16(st + Cfg::kActBytes + tid * 16, code_src + tile * kCodeTile + in_tile * 32, 16);
    if (tid < kRows)
      cp_async_small<4>(st + Cfg::kActBytes + Cfg::kCodeBytes + tid * 4, scale_src + tile * kScaleTile + in_tile * 4, 4);
  };

  // This thread's A rows inside the CTA's kRows: warpgroup wg owns 64, warp w of it 16, lane (g, q) rows g, g + 8.
  const int g = lane >> 2, q = lane & 3;
  const int rA = (warp >> 2) * 64 + (warp & 3) * 16 + g, rB = rA + 8;
  const int shift = 4 * q;

  // The stage's block scales of rows rA, rB (one per slice) as bf16x2 * 2^119. Each scale is converted
  // once per warp: lane l converts row l / 2 (of the warp's 16), slices 2 (l % 2) and + 1, into the
  // warp's scratch, which every lane then reads back for its two rows.
  uint32_t scA[4], scB[4];
  uint32_t* scratch = reinterpret_cast<uint32_t*>(smem + kStages * Cfg::kStageBytes) + warp * 64;   // [16 rows][4]
  auto convert_scales = [&](int s) {
    const uint8_t* sc = smem + (s % kStages) * Cfg::kStageBytes + Cfg::kActBytes + Cfg::kCodeBytes;
    const int r = lane >> 1, h = lane & 1;
    const uint32_t two = *reinterpret_cast<const uint16_t*>(sc + (rA - g + r) * 4 + 2 * h);
    uint32_t out[2];
    convert_scales_n<2>(make_uint2(two, 0u), out);
    *reinterpret_cast<uint2*>(scratch + r * 4 + 2 * h) = make_uint2(out[0], out[1]);
    __syncwarp();
    const uint4 a4 = *reinterpret_cast<const uint4*>(scratch + g * 4);
    const uint4 b4 = *reinterpret_cast<const uint4*>(scratch + (g + 8) * 4);
    scA[0] = a4.x, scA[1] = a4.y, scA[2] = a4.z, scA[3] = a4.w;
    scB[0] = b4.x, scB[1] = b4.y, scB[2] = b4.z, scB[3] = b4.w;
  };

  // Codes of 16-K slice j of stage s, rows rA and rB: words 2j and 2j + 1 of each.
  auto load_codes = [&](int s, int j, uint2& wa, uint2& wb) {
    const uint8_t* codes = smem + (s % kStages) * Cfg::kStageBytes + Cfg::kActBytes;
    wa = *reinterpret_cast<const uint2*>(codes + rA * 32 + j * 8);
    wb = *reinterpret_cast<const uint2*>(codes + rB * 32 + j * 8);
  };
  // One A fragment from them (the stage's scales converted already).
  auto dequant_slice = [&](int j, const uint2& wa, const uint2& wb, uint32_t (&a)[4]) {
    const uint32_t sA = scA[j], sB = scB[j];
    a[0] = dequant_pair(wa.x, shift, sA);               // row g,     K 16j + 2q, +1
    a[1] = dequant_pair(wb.x, shift, sB);               // row g + 8, K 16j + 2q, +1
    a[2] = dequant_pair(wa.y, shift, sA);               // row g,     K 16j + 8 + 2q, +1
    a[3] = dequant_pair(wb.y, shift, sB);               // row g + 8, K 16j + 8 + 2q, +1
  };

  float acc[Cfg::kAccRegs];
#pragma unroll
  for (int i = 0; i < Cfg::kAccRegs; ++i) acc[i] = 0.f;
  uint32_t afrag[4][4];                                 // one A fragment per slice of a stage

  constexpr int kAhead = kStages - 2;                   // stages in flight ahead of the one multiplied
  // Stage s published to every thread (and to wgmma's async proxy); also frees stage s - 2's buffer:
  // every warpgroup has at most 3 wgmmas pending, all of stage s - 1, when it arrives here.
  auto publish = [&]() {
    cp_async_wait<kAhead - 1>();                        // this thread's copies of the stage landed
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   // ... visible to wgmma (async proxy)
    __syncthreads();
  };

#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < steps) load_stage(s);
    cp_async_commit();
  }
  publish();
  if (kAhead < steps) load_stage(kAhead);
  cp_async_commit();
  convert_scales(0);
  uint2 cwA, cwB;                                       // the next slice's codes
  load_codes(0, 0, cwA, cwB);
  dequant_slice(0, cwA, cwB, afrag[0]);
#pragma unroll
  for (int i = 0; i < Cfg::kAccRegs; ++i) cute::warpgroup_fence_operand(acc[i]);
  for (int s = 0; s < steps; ++s) {
    // activations: K-major, 8-row groups 1024 bytes apart
    const uint64_t desc0 = sw128_descriptor(smem + (s % kStages) * Cfg::kStageBytes, 16, 1024);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      cute::warpgroup_arrive();
      wgmma_rs<typename WgmmaOp<kTok>::Op>(acc, afrag[j], desc0 + 2 * j, true,   // +32 B per slice
                                           std::make_index_sequence<Cfg::kAccRegs>{});
      cute::warpgroup_commit_batch();
      if (j < 3) {
        load_codes(s, j + 1, cwA, cwB);                 // shared-memory latency under the wait
        cute::warpgroup_wait<3>();                      // the wgmma that read afrag[(j + 1) % 4] is done
        dequant_slice(j + 1, cwA, cwB, afrag[j + 1]);
      } else {
        cute::warpgroup_wait<3>();
        if (s + 1 < steps) {
          publish();                                    // stage s + 1 in, stage s - 1's buffer free
          if (s + 1 + kAhead < steps) load_stage(s + 1 + kAhead);
          cp_async_commit();
          load_codes(s + 1, 0, cwA, cwB);
          convert_scales(s + 1);                        // (the scratch's last readers passed the barrier)
          dequant_slice(0, cwA, cwB, afrag[0]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < Cfg::kAccRegs; ++i) cute::warpgroup_fence_operand(acc[i]);
  cute::warpgroup_wait<0>();
  cp_async_wait<0>();

  // Epilogue: acc[4i + {0, 1, 2, 3}] = (row g, tokens 8i + 2q, +1), (row g + 8, the same tokens).
  const float alpha = expert_alpha(p, expert) * kEpilogueShift;
  const int nA = n0 + rA, nB = n0 + rB;
#pragma unroll
  for (int i = 0; i < kTok / 8; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int tok = 8 * i + 2 * q + h;
      if (tok >= rows) continue;
      __nv_bfloat16* orow = p.out + (row0 + tok) * p.N;
      if (nA < p.N) orow[nA] = __float2bfloat16(acc[4 * i + h] * alpha);
      if (nB < p.N) orow[nB] = __float2bfloat16(acc[4 * i + 2 + h] * alpha);
    }
  }
#endif
}

// Returns false (launching nothing) unless this is an sm_90 GPU, the layout is tiled, the shared memory
// fits smem_limit and grid.y fits.
template <int kTok, int kStages>
bool launch_wgmma(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  using Cfg = WgmmaCfg<kTok, kStages>;
  constexpr int smem = Cfg::kSmemBytes;
  if (smem > smem_limit || p.scale_layout != kTiled) return false;
  if (current_device_cc_major() != 9) return false;   // wgmma: sm_90a only
  const int64_t slots = p.M < p.E ? p.M : p.E;
  if (slots == 0) return true;
  const int64_t ytiles = (p.M + kTok - 1) / kTok + slots;   // >= sum over experts of ceil(rows / kTok)
  if (ytiles > 65535) return false;
  const dim3 grid((p.N + Cfg::kRows - 1) / Cfg::kRows, static_cast<unsigned>(ytiles));
  constexpr auto k = moe_gemm_wgmma_kernel<kTok, kStages>;
  cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  k<<<grid, Cfg::kThreads, smem, stream>>>(p);
  return true;
}

}  // namespace moe
}  // namespace k2k
