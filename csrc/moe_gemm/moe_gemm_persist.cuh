// Persistent swap-AB weight-streaming grouped GEMM (the decode kernel).
//
// Same math, K order, shared-memory layouts and dequantization as moe_gemm_pipe.cuh (read that first);
// what changes is the scheduling, which is what limited the earlier kernels to ~1.6-2.0 TB/s on the H200
// (benchmarks/RESULTS.md, run 2):
//   1. Persistent CTAs. The grid is (SMs x resident CTAs per SM), and CTA b walks the work units
//      b, b + grid, b + 2 grid, ...; a unit is (j-th expert with rows, 64-row N tile). The earlier
//      kernels launched one CTA per unit: at T = 1 that is 512 CTAs for 396 resident slots, a 1.3-wave
//      tail in which a third of the SMs streamed nothing.
//   2. One pipeline across units. The producer runs kStages - 1 stages ahead through the whole list of
//      (unit, token group, K step), so no pipeline fill or drain happens at a unit boundary: each SM
//      keeps (kStages - 1) x (resident CTAs) stages of weights in flight for the whole kernel.
//   3. Two accumulator sets (even / odd words), so consecutive MMAs of a warp do not wait on each
//      other's result (with one token tile every MMA of a step used to chain on the same registers).
//
// Units are ordered N-tile-fastest, so CTAs running at the same time share an expert's activations in L2.
// Rows before offsets[0] and after offsets[E] (no expert) are written as zeros, grid-stride.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"
#include "moe_gemm/moe_gemm_mma.cuh"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
namespace moe {

constexpr int kPersistWarps = 4;                   // 64 weight rows per unit
constexpr int kPersistStaticSmemReserve = 2048;    // expert bitmask + what the compiler adds

// Position of the producer or the consumer in a CTA's work list: unit, token group, K step.
struct WorkPos {
  int unit;           // index into (active expert slot, N tile); >= units when the list is done
  int expert;         // expert of the unit
  int64_t row0;       // its first row
  int count;          // its rows
  int n0;             // first weight row (output column) of the unit
  int tg;             // first token of the current group
  int s;              // K step
};

struct WorkList {
  const MoeGemmParams* p;
  const uint32_t* nz_words;
  int words, units, ntiles, steps, tokens, stride;

  __device__ __forceinline__ void set_unit(WorkPos& w, int unit) const {
    w.unit = unit;
    w.tg = 0;
    w.s = 0;
    if (unit >= units) return;
    w.expert = nth_active_expert(nz_words, words, unit / ntiles);
    w.n0 = (unit % ntiles) * (kPersistWarps * 16);
    w.row0 = clamped_offset(*p, w.expert);
    w.count = static_cast<int>(clamped_offset(*p, w.expert + 1) - w.row0);
  }
  __device__ __forceinline__ void advance(WorkPos& w) const {
    if (++w.s < steps) return;
    w.s = 0;
    w.tg += tokens;
    if (w.tg < w.count) return;
    set_unit(w, w.unit + stride);
  }
};

// Rows [0, offsets[0]) and [offsets[E], M) belong to no expert: zeros, spread over the whole grid.
__device__ __forceinline__ void zero_rows_without_expert(const MoeGemmParams& p) {
  const int64_t lo = clamped_offset(p, 0), hi = clamped_offset(p, p.E);
  const int64_t total = (lo + p.M - hi) * p.N;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / p.N;
    const int64_t row = r < lo ? r : hi + (r - lo);
    p.out[row * p.N + i % p.N] = __float2bfloat16(0.f);
  }
}

// Byte offsets for the copies of a 64-row unit (rows n0 .. n0 + 63, n0 % 64 == 0): weight / scale =
// 64-bit offsets of (expert, row n0, K = 0); weight_row / scale_row = offsets of row n0 + r (clamped to
// N - 1) relative to them; step_weight / step_scale = what K step k0 adds (the same for every row).
// Same byte addresses as weight_index / scale_index (moe_gemm_common.cuh), which define the layouts,
// except the tiled layout's chunk swap in odd rows, which the copy's destination undoes.
template <int kLayout>
struct UnitAddress {
  int64_t weight, scale;
  __device__ __forceinline__ UnitAddress(const MoeGemmParams& p, int e, int n0) {
    weight = weight_index<kLayout>(p, e, n0, 0);
    scale = scale_index<kLayout>(p, e, n0, 0);
  }
  __device__ __forceinline__ static int weight_row(const MoeGemmParams& p, int n0, int r) {
    const int dn = min(n0 + r, p.N - 1) - n0;
    if constexpr (kLayout == kTiled) return dn * (kTileK / 2);        // rows of one [64 x 256 B] tile
    else return dn * (p.K / 2);
  }
  // piece = byte offset of the piece within the row's scales of a step (a multiple of 4)
  __device__ __forceinline__ static int scale_row(const MoeGemmParams& p, int n0, int r, int piece) {
    const int n = min(n0 + r, p.N - 1);
    if constexpr (kLayout == kScaleLinear) return (n - n0) * (p.K / 16) + piece;
    else if constexpr (kLayout == kTiled) return (n - n0) * (kTileK / 16) + piece;
    else return (piece >> 2) * 512 + ((n & 31) * 16 + ((n >> 5) & 3) * 4) - ((n0 & 31) * 16 + ((n0 >> 5) & 3) * 4);
  }
  // k0 = the step's first K (a multiple of the step, which divides 512)
  __device__ __forceinline__ static int64_t step_weight(int k0) {
    if constexpr (kLayout == kTiled) return int64_t(k0 / kTileK) * (kTileN * kTileK / 2) + (k0 % kTileK) / 2;
    else return k0 / 2;
  }
  __device__ __forceinline__ static int64_t step_scale(int k0) {
    if constexpr (kLayout == kScaleLinear) return k0 / 16;
    else if constexpr (kLayout == kTiled) return int64_t(k0 / kTileK) * (kTileN * kTileK / 16) + (k0 % kTileK) / 16;
    else return int64_t(k0 / 64) * 512;                                 // 4 blocks of 16 per 128x4 tile
  }
};

// Work units of a persistent decode kernel: (expert with rows, 64-row N tile); min(M, E) bounds the
// experts with rows without reading the offsets.
inline int64_t persistent_units(const MoeGemmParams& p) {
  const int64_t slots = p.M < p.E ? p.M : p.E;
  return slots * ((p.N + kPersistWarps * 16 - 1) / (kPersistWarps * 16));
}

// Grid of a persistent kernel: min(units, SMs x its resident CTAs per SM). The shared-memory opt-in and
// the occupancy query run once per (kernel, device): a host query per launch would cost microseconds
// at decode.
template <auto kKernel>
int persistent_grid(int64_t units, int threads, int smem) {
  static int64_t capacity[64] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  int64_t& cap = capacity[dev >= 0 && dev < 64 ? dev : 0];
  if (cap == 0) {                      // the attribute is per device too: set it once with the query
    cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    int occ = 0, sms = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kKernel, threads, smem);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cap = int64_t(sms > 0 ? sms : 1) * (occ > 0 ? occ : 1);
  }
  return static_cast<int>(units < cap ? units : cap);
}

// (launch bounds as measured on the H200: 128 threads, at least 1 CTA per SM)
template <int kNT, int kStepK, int kStages, int kLayout>
__global__ void __launch_bounds__(kPersistWarps * 32, 1)
moe_gemm_persist_kernel(const MoeGemmParams p) {
  using Cfg = PipeCfg<kNT, kStepK, kStages, kPersistWarps>;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int kTokens = 8 * kNT;
  extern __shared__ __align__(16) uint8_t pipe_smem[];
  __shared__ uint32_t nz_words[kMaxExpertWords];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, q = lane & 3;

  const int active = mark_active_experts<kThreads>(p, nz_words);
  zero_rows_without_expert(p);
  const int ntiles = (p.N + Cfg::kRows - 1) / Cfg::kRows;
  const WorkList list{&p, nz_words, (p.E + 31) / 32, active * ntiles, ntiles, (p.K + kStepK - 1) / kStepK,
                      kTokens, static_cast<int>(gridDim.x)};
  WorkPos prod, cons;
  list.set_unit(prod, blockIdx.x);
  if (prod.unit >= list.units) return;
  cons = prod;
  const int kblocks = p.K / 16;

  // Copies stage `w` (weights, scales, activations of one K step) into buffer `buf` (smem layouts as in
  // moe_gemm_pipe.cuh). The kernel is issue-bound at decode (H200, first version: IPC ~3.8 by SASS
  // instruction count x run time; its copies spent ~800 integer instructions per thread per step next
  // to ~380 of math), so each
  // thread's source rows are resolved once per (unit, token group) into pointers (`plan_copies`) and a
  // step only adds the step's offset. Copies that are off (past K, past the expert's rows) read 0 bytes
  // at the row's first address, which is valid.
  constexpr int kPiece = kLayout == kScaleLinear ? 8 : (kLayout == kTiled ? (Cfg::kSb < 16 ? Cfg::kSb : 16) : 4);
  constexpr int kPieces = Cfg::kSb / kPiece;
  constexpr int kAch = kStepK / 8;                                  // 16-byte activation chunks per token
  constexpr int kWC = Cfg::kRows * Cfg::kCpr / kThreads;            // copies per thread per step
  constexpr int kScaleCopies = Cfg::kRows * kPieces;
  constexpr int kSC = kScaleCopies >= kThreads ? kScaleCopies / kThreads : 1;
  constexpr int kAC = kTokens * kAch / kThreads;
  static_assert(kWC >= 1 && Cfg::kRows * Cfg::kCpr % kThreads == 0 && kThreads % Cfg::kCpr == 0, "weight copies");
  static_assert(kScaleCopies % kThreads == 0 || kScaleCopies < kThreads, "scale copies");
  static_assert(kThreads % kPieces == 0, "scale piece of a thread");
  static_assert(kAC >= 1 && kTokens * kAch % kThreads == 0 && kThreads % kAch == 0, "activation copies");
  const bool scale_copier = kScaleCopies >= kThreads || tid < kScaleCopies;
  const int wc = tid % Cfg::kCpr, pc = tid % kPieces, kc = tid % kAch;   // fixed per thread
  const uint8_t* wsrc[kWC];
  const uint8_t* ssrc[kSC];
  const uint8_t* asrc[kAC];
  bool arow[kAC];

  auto plan_copies = [&](const WorkPos& w) {
    const UnitAddress<kLayout> at(p, w.expert, w.n0);
#pragma unroll
    for (int j = 0; j < kWC; ++j)
      wsrc[j] = p.w + at.weight + at.weight_row(p, w.n0, (tid + j * kThreads) / Cfg::kCpr) + wc * 16;
#pragma unroll
    for (int j = 0; j < kSC; ++j)
      ssrc[j] = p.w_scale + at.scale + at.scale_row(p, w.n0, (tid + j * kThreads) / kPieces, pc * kPiece);
#pragma unroll
    for (int j = 0; j < kAC; ++j) {
      const int tok = (tid + j * kThreads) / kAch;
      arow[j] = w.tg + tok < w.count;
      asrc[j] = reinterpret_cast<const uint8_t*>(p.a + (arow[j] ? (w.row0 + w.tg + tok) * p.K + kc * 8 : 0));
    }
  };

  auto load_stage = [&](const WorkPos& w, int buf) {
    if (w.s == 0) plan_copies(w);                                   // a new unit or token group
    uint8_t* st = pipe_smem + buf * Cfg::kStageBytes;
    const int k0 = w.s * kStepK;
    const bool wvalid = k0 + wc * 32 < p.K;
    const int64_t woff = wvalid ? UnitAddress<kLayout>::step_weight(k0) : 0;
#pragma unroll
    for (int j = 0; j < kWC; ++j) {
      const int r = (tid + j * kThreads) / Cfg::kCpr;
      // the tiled layout stores an odd row's chunk c at c ^ 1 (moe_gemm_common.cuh: weight_index)
      const int c = kLayout == kTiled ? wc ^ (r & 1) : wc;
      cp_async_16(st + (r * Cfg::kCpr + weight_chunk_swizzle<Cfg::kCpr>(r, c)) * 16, wsrc[j] + woff, wvalid ? 16 : 0);
    }
    uint8_t* ss = st + Cfg::kWeightBytes;
    if (scale_copier) {
      const bool svalid = w.s * Cfg::kSb + pc * kPiece < kblocks;
      const int64_t soff = svalid ? UnitAddress<kLayout>::step_scale(k0) : 0;
#pragma unroll
      for (int j = 0; j < kSC; ++j) {
        uint8_t* dst = ss + ((tid + j * kThreads) / kPieces) * Cfg::kSb + pc * kPiece;
        if constexpr (kPiece == 16) cp_async_16(dst, ssrc[j] + soff, svalid ? kPiece : 0);
        else cp_async_small<kPiece>(dst, ssrc[j] + soff, svalid ? kPiece : 0);
      }
    }
    uint8_t* sa = ss + Cfg::kScaleBytes;
    const bool kvalid = k0 + kc * 8 < p.K;
#pragma unroll
    for (int j = 0; j < kAC; ++j) {
      const int tok = (tid + j * kThreads) / kAch;
      const bool valid = arow[j] && kvalid;
      const int pos = ((tok >> 3) * Cfg::kWpt + kc % Cfg::kWpt) * 32 + (tok & 7) * 4 + kc / Cfg::kWpt;
      cp_async_16(sa + pos * 16, asrc[j] + (valid ? int64_t(k0) * 2 : 0), valid ? 16 : 0);
    }
  };

  float acc[kNT][2][4];
  auto zero_acc = [&]() {
#pragma unroll
    for (int t = 0; t < kNT; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) acc[t][h][0] = acc[t][h][1] = acc[t][h][2] = acc[t][h][3] = 0.f;
  };
  zero_acc();

#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) {
    if (prod.unit < list.units) {
      load_stage(prod, j);
      list.advance(prod);
    }
    cp_async_commit();
  }

  const int rA = warp * 16 + g, rB = rA + 8;
  int buf = 0;
  while (cons.unit < list.units) {
    cp_async_wait<kStages - 2>();
    __syncthreads();                 // stage `buf` visible; the buffer refilled below fully consumed
    if (prod.unit < list.units) {
      load_stage(prod, buf == 0 ? kStages - 1 : buf - 1);
      list.advance(prod);
    }
    cp_async_commit();

    const uint8_t* st = pipe_smem + buf * Cfg::kStageBytes;
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
        mma_bf16_16816(acc[t][wd & 1], ra[0], rb[0], ra[1], rb[1], b.x, b.y);
        mma_bf16_16816(acc[t][wd & 1], ra[2], rb[2], ra[3], rb[3], b.z, b.w);
      }
    }

    if (cons.s == list.steps - 1) {    // last K step of a token group: write it out
      const float alpha = expert_alpha(p, cons.expert) * kEpilogueShift;
      const int nA = cons.n0 + rA, nB = cons.n0 + rB;
#pragma unroll
      for (int t = 0; t < kNT; ++t) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int tok = cons.tg + t * 8 + 2 * q + h;
          if (tok >= cons.count) continue;
          __nv_bfloat16* orow = p.out + (cons.row0 + tok) * p.N;
          if (nA < p.N) orow[nA] = __float2bfloat16((acc[t][0][h] + acc[t][1][h]) * alpha);
          if (nB < p.N) orow[nB] = __float2bfloat16((acc[t][0][2 + h] + acc[t][1][2 + h]) * alpha);
        }
      }
      zero_acc();
    }
    list.advance(cons);
    buf = buf + 1 == kStages ? 0 : buf + 1;
  }
  cp_async_wait<0>();
}

template <int kNT, int kStepK, int kStages, int kLayout>
void launch_persist_layout(const MoeGemmParams& p, int smem, int64_t units, cudaStream_t stream) {
  constexpr auto k = moe_gemm_persist_kernel<kNT, kStepK, kStages, kLayout>;
  k<<<persistent_grid<k>(units, kPersistWarps * 32, smem), kPersistWarps * 32, smem, stream>>>(p);
}

// Returns false (launching nothing) if the config's shared memory exceeds smem_limit.
template <int kNT, int kStepK, int kStages>
bool launch_persist(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  using Cfg = PipeCfg<kNT, kStepK, kStages, kPersistWarps>;
  constexpr int smem = Cfg::kSmemBytes;
  if (smem > smem_limit) return false;
  static_assert(Cfg::kRows == kPersistWarps * 16, "persistent_units counts 64-row units");
  const int64_t units = persistent_units(p);
  if (units == 0) return true;
  if (p.scale_layout == kScaleLinear) launch_persist_layout<kNT, kStepK, kStages, kScaleLinear>(p, smem, units, stream);
  else if (p.scale_layout == kTiled) launch_persist_layout<kNT, kStepK, kStages, kTiled>(p, smem, units, stream);
  else launch_persist_layout<kNT, kStepK, kStages, kScaleSwizzled>(p, smem, units, stream);
  return true;
}

}  // namespace moe
}  // namespace k2k
