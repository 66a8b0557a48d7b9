// Persistent swap-AB decode kernel fed by bulk copies (cp.async.bulk + mbarrier; sm_90 and sm_120).
//
// Why (benchmarks/probe_stream.cu, H200, 2026-11-29): with the decode kernel's math per weight byte
// (dequantize + mma.sync) next to the copies, streaming reaches 83-88 % of the 4.2 TB/s copy rate, and
// without the math 96 %; the persistent cp.async kernel (moe_gemm_persist.cuh) reached 56 %. Its SASS
// has ~500 instructions per 256-K step per thread, of which ~130 issue copies (address math, predicates,
// zero-fill) and ~30 walk the work list, next to ~340 of math: the kernel is issue-bound, and the copies
// are the part that can move off the math warps. Here one producer warp issues all copies as bulk copies
// that complete on the stage's "full" mbarrier; the four math warps only wait, compute, and release the
// stage on its "empty" mbarrier. No __syncthreads in the loop. Measured (H200, benchmarks/RESULTS.md,
// fifth session): gate_up T=1 42.5 us = 74 % of copy (persist on the same weights: 53 us), T=16 87 %,
// T=64 84 %; of the T=1 call ~4 us are launch and ~3 us prologue before the first weight copy, then
// the weights stream at ~3.9 TB/s (benchmarks/probe_bulk.cu; measured before the kernel was launched
// with PDL, seventh session, whose L2 prefetch of the first tiles changes the prologue).
//
// Work list, units (active expert, 64-row N tile), token groups, epilogue and dequantization are the
// persistent kernel's (moe_gemm_persist.cuh, moe_gemm_mma.cuh). A bulk copy cannot swizzle, so the
// kernel reads the tiled layout only (k2kernels/moe_gemm_prepare.py), whose 64-row x 512-K tiles are
// stored exactly as this kernel wants them in shared memory: one 16 KB copy of codes and one 2 KB copy
// of scales per K step. Bank conflicts are avoided by the tile's chunk order and the K order:
//   - thread (g, q) owns the 16-byte chunks {2q, 2q+1, 2q+8, 2q+9} of its rows; the tiled layout
//     stores chunk c of row r at c ^ (r & 1), so the eight lanes of a shared-memory phase (rows r and
//     r + 1, q = 0..3) hit eight different 16-byte bank groups;
//   - activations: each token's 1 KB of the step is copied as eight 128-byte pieces, piece m = 4h + q
//     holding K [256h + 64q, +64) at m * 144 bytes, tokens 1216 bytes apart: conflict-free the same way;
//   - scales: the tile's 32 bytes per row, row-major.
// Tokens past an expert's rows are not copied: their activation slots keep stale data, which only ever
// reaches their own output columns (an MMA column depends on its B column alone), and those are not
// written. Needs the tiled layout (N % 64 == 0, K % 512 == 0) and 16-byte aligned a, w and w_scale.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cuda/ptx>
#define K2K_BULK_COPY 1
#endif

// benchmarks/probe_bulk.cu compiles this header with K2K_BULK_TRACE: each CTA then stamps clock64() at
// its phases into k2k_bulk_trace (slot 0 entry, 1 work list ready, 2 first copies issued, 3 first stage
// landed, 4 done = the last math warp's end; 5 the SM's id; 6 / 7 = globaltimer at entry / done;
// 8 barriers initialised, 9 experts marked, 10 rows without expert zeroed). Without the macro the stamps compile to nothing.
#ifdef K2K_BULK_TRACE
__device__ long long k2k_bulk_trace[4096][16];
#define K2K_BULK_STAMP(slot) (k2k_bulk_trace[blockIdx.x][slot] = clock64())
#define K2K_BULK_STAMP_GLOBAL(slot) \
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(k2k_bulk_trace[blockIdx.x][slot]))
#define K2K_BULK_STAMP_SM(slot) \
  asm volatile("{ .reg .u32 t; mov.u32 t, %%smid; cvt.u64.u32 %0, t; }" : "=l"(k2k_bulk_trace[blockIdx.x][slot]))
// the latest of the math warps (the slots are zeroed at entry, before the prologue's barrier)
#define K2K_BULK_STAMP_LAST(slot, value) atomicMax(&k2k_bulk_trace[blockIdx.x][slot], (value))
__device__ __forceinline__ long long k2k_globaltimer() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#else
#define K2K_BULK_STAMP(slot) ((void)0)
#define K2K_BULK_STAMP_GLOBAL(slot) ((void)0)
#define K2K_BULK_STAMP_SM(slot) ((void)0)
#define K2K_BULK_STAMP_LAST(slot, value) ((void)0)
#endif

#include "common/pdl.cuh"
#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"
#include "moe_gemm/moe_gemm_mma.cuh"
#include "moe_gemm/moe_gemm_persist.cuh"

namespace k2k {
namespace moe {

constexpr int kBulkMathWarps = 4;                          // 16 weight rows each: 64-row units
constexpr int kBulkThreads = (kBulkMathWarps + 1) * 32;    // + the producer warp
constexpr int kBulkStepK = 512;
constexpr int kBulkStaticSmemReserve = 2048;               // expert bitmask, mbarriers, compiler's own

// kTokens = tokens per pass: 8 (one MMA column tile) or 4 (columns 4..7 of the MMA then read tokens
// 0..3 again and are discarded: half the activation stage, so one more CTA fits per SM).
template <int kTokensPerPass, int kStages>
struct BulkCfg {
  static constexpr int kTokens = kTokensPerPass;
  static_assert(kTokens == 4 || kTokens == 8, "tokens per pass");
  static constexpr int kRows = kBulkMathWarps * 16;
  static constexpr int kRowBytes = kBulkStepK / 2;         // 256 code bytes per row per step
  static constexpr int kScaleRow = kBulkStepK / 16;        // 32 scale bytes per row per step
  static constexpr int kPiece = 128;                       // activation piece: 64 K elements
  static constexpr int kPieceStride = kPiece + 16;
  static constexpr int kTokenStride = 8 * kPieceStride + 64;   // 1216 = 76 x 16: tokens g, g+1 4 groups apart
  static constexpr int kWeightBytes = kRows * kRowBytes;
  static constexpr int kScaleBytes = kRows * kScaleRow;
  static constexpr int kActBytes = kTokens * kTokenStride;
  static constexpr int kStageBytes = kWeightBytes + kScaleBytes + kActBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static constexpr uint32_t kFixedTx = kWeightBytes + kScaleBytes;   // bytes per stage besides activations
  static_assert(kWeightBytes % 16 == 0 && kScaleBytes % 16 == 0 && kTokenStride % 16 == 0, "16-byte copy targets");
  static_assert(kTokenStride / 16 % 8 == 4, "tokens g and g + 1 must be four bank groups apart");
};

#ifdef K2K_BULK_COPY
__device__ __forceinline__ void bulk_copy(void* smem, const void* gmem, uint32_t bytes, uint64_t* bar) {
  cuda::ptx::cp_async_bulk(cuda::ptx::space_shared, cuda::ptx::space_global, smem, gmem, bytes, bar);
}
__device__ __forceinline__ void wait_phase(uint64_t* bar, uint32_t parity) {
  while (!cuda::ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}

// Expert offset e read while the stream's previous kernel may still be writing it (before pdl_wait):
// a relaxed load (not the read-only cache path, whose line could outlive the wait), clamped to [0, M].
// Its value only chooses which weights to prefetch into L2.
__device__ __forceinline__ int64_t racy_offset(const MoeGemmParams& p, int e) {
  int v;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p.expert_offsets + e));
  return v < 0 ? 0 : (v > p.M ? p.M : v);
}

// cp.async.bulk.prefetch.L2 (sm_90): bring `bytes` (a multiple of 16, 16-byte aligned) into L2.
__device__ __forceinline__ void prefetch_l2(const void* gmem, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(gmem), "r"(bytes) : "memory");
}

// Before pdl_wait (the kernel may overlap the previous kernel, e.g. fused_moe's gather or SiLU): one
// warp finds this CTA's first unit from racy offsets (the (blockIdx.x / ntiles)-th expert with rows)
// and prefetches its first kSteps weight and scale tiles into L2, so the copies after the wait hit L2.
// Any offsets give an expert in [0, E) and a tile inside w / w_scale; L2 is coherent, so a prefetch
// never returns stale data.
template <class Cfg, int kSteps>
__device__ __forceinline__ void prefetch_first_unit(const MoeGemmParams& p, int ntiles, int lane) {
  const int want = blockIdx.x / ntiles;                    // rank of this CTA's expert among those with rows
  int seen = 0, expert = -1;
  for (int base = 0; base < p.E && expert < 0; base += 32) {
    const int e = base + lane;
    const bool nz = e < p.E && racy_offset(p, e + 1) > racy_offset(p, e);
    const uint32_t bits = __ballot_sync(0xFFFFFFFFu, nz);
    const int c = __popc(bits);
    if (want < seen + c) {
      uint32_t m = bits;
      for (int t = seen; t < want; ++t) m &= m - 1;
      expert = base + __ffs(m) - 1;
    }
    seen += c;
  }
  if (expert < 0 || lane != 0) return;
  const int n0 = (blockIdx.x % ntiles) * Cfg::kRows;
  const uint8_t* wtile = p.w + weight_index<kTiled>(p, expert, n0, 0);
  const uint8_t* stile = p.w_scale + scale_index<kTiled>(p, expert, n0, 0);
  const int steps = min(kSteps, p.K / kBulkStepK);
  for (int s = 0; s < steps; ++s) {
    prefetch_l2(wtile + int64_t(s) * Cfg::kWeightBytes, Cfg::kWeightBytes);
    prefetch_l2(stile + int64_t(s) * Cfg::kScaleBytes, Cfg::kScaleBytes);
  }
}
#endif

template <int kTokens, int kStages>
__global__ void __launch_bounds__(kBulkThreads, 1) moe_gemm_bulk_kernel(const MoeGemmParams p) {
#ifdef K2K_BULK_COPY
  using Cfg = BulkCfg<kTokens, kStages>;
  extern __shared__ __align__(128) uint8_t bulk_smem[];
  __shared__ uint32_t nz_words[kMaxExpertWords];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (tid == 0) {
    K2K_BULK_STAMP_GLOBAL(6);
    K2K_BULK_STAMP_SM(5);
#ifdef K2K_BULK_TRACE
    k2k_bulk_trace[blockIdx.x][4] = k2k_bulk_trace[blockIdx.x][7] = 0;
#endif
    K2K_BULK_STAMP(0);
    for (int s = 0; s < kStages; ++s) {
      cuda::ptx::mbarrier_init(&full[s], 1);                  // the producer's arrive + the copies' bytes
      cuda::ptx::mbarrier_init(&empty[s], kBulkMathWarps);    // one arrive per math warp
    }
    cuda::ptx::fence_mbarrier_init(cuda::ptx::sem_release, cuda::ptx::scope_cluster);
    K2K_BULK_STAMP(8);
  }
  const int ntiles = (p.N + Cfg::kRows - 1) / Cfg::kRows;
  // Launched with PDL (launch_bulk): until pdl_wait returns, the previous kernel may still be writing
  // the activations, the offsets and the output; only the producer's speculative weight prefetch runs
  // before it. The math warps alone mark the experts, so without an earlier kernel to overlap (pdl_wait
  // returns at once) the prefetch's offset reads run beside the marking instead of before it.
  if (warp == kBulkMathWarps) prefetch_first_unit<Cfg, kStages>(p, ntiles, lane);
  pdl_wait();
  if (warp < kBulkMathWarps) mark_expert_words<kBulkMathWarps * 32>(p, nz_words);
  __syncthreads();                                             // publishes the bitmask and the barriers' init
  const int active = count_active_experts(p, nz_words);
  if (tid == 0) K2K_BULK_STAMP(9);
  zero_rows_without_expert(p);
  if (tid == 0) K2K_BULK_STAMP(10);
  const WorkList list{&p, nz_words, (p.E + 31) / 32, active * ntiles, ntiles, p.K / kBulkStepK, Cfg::kTokens,
                      static_cast<int>(gridDim.x)};
  WorkPos pos;
  list.set_unit(pos, blockIdx.x);
  if (pos.unit >= list.units) return;
  if (tid == 0) K2K_BULK_STAMP(1);

  if (warp == kBulkMathWarps) {
    // ---- producer warp: lane 0 copies the step's code and scale tiles, lane l the activation pieces
    // l + 32 j (token (l + 32 j) / 8, piece (l + 32 j) % 8) ----
    constexpr int kPieces = Cfg::kTokens * 8 / 32;
    const uint8_t* wtile = nullptr;
    const uint8_t* stile = nullptr;
    const __nv_bfloat16* arow[kPieces];
    int s = 0;
    uint32_t phase = 0;
    for (int64_t i = 0; pos.unit < list.units; ++i) {
      if (pos.s == 0) {                                       // a new unit or token group: resolve sources
        wtile = p.w + weight_index<kTiled>(p, pos.expert, pos.n0, 0);
        stile = p.w_scale + scale_index<kTiled>(p, pos.expert, pos.n0, 0);
#pragma unroll
        for (int j = 0; j < kPieces; ++j) {
          const int idx = lane + 32 * j, tok = idx >> 3, m = idx & 7;
          const int64_t row = pos.row0 + pos.tg + (pos.tg + tok < pos.count ? tok : 0);
          arow[j] = p.a + row * p.lda + (m >> 2) * 256 + (m & 3) * 64;
        }
      }
      if (i >= kStages) wait_phase(&empty[s], phase ^ 1);     // the math warps released this stage
      const int valid = min(Cfg::kTokens, pos.count - pos.tg);
      uint8_t* st = bulk_smem + s * Cfg::kStageBytes;
      if (lane == 0) {                                        // tiles of one expert's N tile follow each other in K
        cuda::ptx::mbarrier_arrive_expect_tx(cuda::ptx::sem_release, cuda::ptx::scope_cta, cuda::ptx::space_shared,
                                             &full[s], Cfg::kFixedTx + uint32_t(valid) * (8 * Cfg::kPiece));
        bulk_copy(st, wtile + int64_t(pos.s) * Cfg::kWeightBytes, Cfg::kWeightBytes, &full[s]);
        bulk_copy(st + Cfg::kWeightBytes, stile + int64_t(pos.s) * Cfg::kScaleBytes, Cfg::kScaleBytes, &full[s]);
      }
      const int k0 = pos.s * kBulkStepK;
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        const int idx = lane + 32 * j, tok = idx >> 3, m = idx & 7;
        if (tok < valid)
          bulk_copy(st + Cfg::kWeightBytes + Cfg::kScaleBytes + tok * Cfg::kTokenStride + m * Cfg::kPieceStride,
                    arow[j] + k0, Cfg::kPiece, &full[s]);
      }
      if (i == 0 && lane == 0) K2K_BULK_STAMP(2);
      list.advance(pos);
      if (++s == kStages) {
        s = 0;
        phase ^= 1;
      }
    }
    return;
  }

  // ---- math warps ----
  const int g = lane >> 2, q = lane & 3;
  const int rA = warp * 16 + g, rB = rA + 8;
  float acc[2][4];
  auto zero_acc = [&]() {
#pragma unroll
    for (int h = 0; h < 2; ++h) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = 0.f;
  };
  zero_acc();
  int s = 0;
  uint32_t phase = 0;
  bool first = true;
  while (pos.unit < list.units) {
    wait_phase(&full[s], phase);
    if (first && tid == 0) K2K_BULK_STAMP(3);
    first = false;
    const uint8_t* st = bulk_smem + s * Cfg::kStageBytes;
    // Scales of the thread's K ranges [64q, +64) and [256 + 64q, +64): blocks 4q..4q+3 and 16+4q..16+4q+3.
    const uint8_t* ss = st + Cfg::kWeightBytes;
    const uint2 sa2 = make_uint2(*reinterpret_cast<const uint32_t*>(ss + rA * Cfg::kScaleRow + 4 * q),
                                 *reinterpret_cast<const uint32_t*>(ss + rA * Cfg::kScaleRow + 16 + 4 * q));
    const uint2 sb2 = make_uint2(*reinterpret_cast<const uint32_t*>(ss + rB * Cfg::kScaleRow + 4 * q),
                                 *reinterpret_cast<const uint32_t*>(ss + rB * Cfg::kScaleRow + 16 + 4 * q));
    uint32_t scA[8], scB[8];
    convert_scales_n<8>(sa2, scA);
    convert_scales_n<8>(sb2, scB);
    const uint8_t* act =
        st + Cfg::kWeightBytes + Cfg::kScaleBytes + (g % kTokens) * Cfg::kTokenStride + q * Cfg::kPieceStride;
#pragma unroll
    for (int i = 0; i < 4; ++i) {                             // chunk i: 2q + (i & 1) + 8 (i >> 1)
      const int chunk = 2 * q + (i & 1) + 8 * (i >> 1);
      const int at = (chunk ^ (g & 1)) * 16;                 // rows rA, rB have the parity of g
      const uint4 wa = *reinterpret_cast<const uint4*>(st + rA * Cfg::kRowBytes + at);
      const uint4 wb = *reinterpret_cast<const uint4*>(st + rB * Cfg::kRowBytes + at);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int wd = 4 * i + j;                             // K = 256 (i >> 1) + 64 q + 32 (i & 1) + 8 j
        uint32_t ra[4], rb[4];
        dequant_word((&wa.x)[j], scA[wd >> 1], ra);
        dequant_word((&wb.x)[j], scB[wd >> 1], rb);
        const uint4 x = *reinterpret_cast<const uint4*>(act + (i >> 1) * 4 * Cfg::kPieceStride + (i & 1) * 64 + j * 16);
        const uint4 b = activation_pairs<kPairedCodes<kTiled>>(x);   // K pairs as loaded
        mma_bf16_16816(acc[wd & 1], ra[0], rb[0], ra[1], rb[1], b.x, b.y);
        mma_bf16_16816(acc[wd & 1], ra[2], rb[2], ra[3], rb[3], b.z, b.w);
      }
    }
    __syncwarp();
    if (lane == 0) cuda::ptx::mbarrier_arrive(&empty[s]);     // this warp is done reading the stage

    if (pos.s == list.steps - 1) {                            // last K step of a token group: write it out
      const float alpha = expert_alpha(p, pos.expert) * kEpilogueShift;
      const int nA = pos.n0 + rA, nB = pos.n0 + rB;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int col = 2 * q + h;                             // MMA column = token of the pass
        if (col >= kTokens || pos.tg + col >= pos.count) continue;
        __nv_bfloat16* orow = p.out + (pos.row0 + pos.tg + col) * p.N;
        if (nA < p.N) orow[nA] = __float2bfloat16((acc[0][h] + acc[1][h]) * alpha);
        if (nB < p.N) orow[nB] = __float2bfloat16((acc[0][2 + h] + acc[1][2 + h]) * alpha);
      }
      zero_acc();
    }
    list.advance(pos);
    if (++s == kStages) {
      s = 0;
      phase ^= 1;
    }
  }
  if (lane == 0) {
    K2K_BULK_STAMP_LAST(4, clock64());
    K2K_BULK_STAMP_LAST(7, k2k_globaltimer());
  }
#endif
}

// Returns false (launching nothing) when the kernel cannot run this call: no bulk copies before sm_90,
// a layout other than tiled, or shared memory over smem_limit.
template <int kTokens, int kStages>
bool launch_bulk(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  using Cfg = BulkCfg<kTokens, kStages>;
  constexpr int smem = Cfg::kSmemBytes;
  if (smem > smem_limit || p.scale_layout != kTiled) return false;
  if (current_device_cc_major() < 9) return false;    // bulk copies: sm_90+
  static_assert(Cfg::kRows == kPersistWarps * 16, "persistent_units counts 64-row units");
  const int64_t units = persistent_units(p);
  if (units == 0) return true;
  constexpr auto k = moe_gemm_bulk_kernel<kTokens, kStages>;
  // PDL: the kernel's prologue and first weight prefetches overlap the previous kernel's end
  // (fused_moe: gather before gate_up, or moe_align at T = 1; SiLU before down; those trigger their
  // dependents at their start).
  // (a launch error surfaces through cudaGetLastError: C10_CUDA_KERNEL_LAUNCH_CHECK in the caller)
  launch_with_pdl(k, dim3(persistent_grid<k>(units, kBulkThreads, smem)), dim3(kBulkThreads), smem, stream, p);
  return true;
}

}  // namespace moe
}  // namespace k2k
