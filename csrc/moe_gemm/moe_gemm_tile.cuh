// Tile grouped GEMM for prefill (tens to thousands of rows per expert): dequantize once, reuse 128x.
//
// The streaming kernels dequantize every weight element once per pass of <= 64 tokens and keep
// tokens on the MMA's narrow N side, so at T = 4096 they spent their time dequantizing (97 TFLOP/s).
// Here a CTA computes a [kBM tokens x 128 weight rows] output tile: per 64-wide K slab it dequantizes
// the 128 x 64 weight slab ONCE into a bf16 shared-memory tile and multiplies it by the kBM x 64
// activation slab with ldmatrix + mma.sync m16n8k16 (no tcgen05/wgmma: the same code runs on SM120).
//
// Layout (tokens on the MMA's M side, weights on N): 8 warps = 2 (tokens) x 4 (weight rows); a warp
// owns kBM/2 tokens x 32 weight rows. Shared-memory rows are 64 bf16 = 8 chunks of 16 bytes, chunk c of
// row r stored at c ^ (r % 8) so ldmatrix and the dequantizer's 16-byte stores are conflict-free.
//
// Pipeline (one __syncthreads per slab): cp.async brings activations, packed e2m1 codes and scales of
// slab s + kStages - 1 while the warps dequantize slab s + 1 into one bf16 buffer and multiply slab s
// from the other; the dequantize (integer pipe) and the MMAs (tensor pipe) of different warps overlap.
//
// Dequantization in natural K order (the activations arrive by cp.async, unpermuted). Tiled layout: its
// words store the codes in the order K 0 2 4 6 1 3 5 7, so dequant_word's registers (nibble i, i + 4)
// are already K pairs. Linear / swizzled layouts (codes in K order): for a word of 8 codes, u / v = the
// low / high nibbles of its 4 bytes; prmt puts code 2j at bits 0..3 and code 2j+1 at bits 16..19 (the
// other bytes zero); x * 0x1040 = (x << 6) + (x << 12) without carries, and
// & 0x81C081C0 keeps sign (bit 15) and e2m1 magnitude bits (8..6) of both halves: e2m1 * 2^-126 in
// bf16 (see moe_gemm_mma.cuh), times the block scale * 2^119; the epilogue applies 2^7 and alpha.
//
// Scheduling without a host sync: grid.x = 128-row N tiles, grid.y = an upper bound on the token
// tiles (ceil(M / kBM) + min(E, M)); CTA y takes the y-th (expert, token tile) in expert order, found
// by a block scan of ceil(rows_e / kBM) over the offsets; CTAs past the last tile exit at once.
#pragma once
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cstdint>

#include "moe_gemm/moe_gemm.h"
#include "moe_gemm/moe_gemm_common.cuh"
#include "moe_gemm/moe_gemm_mma.cuh"

namespace k2k {
namespace moe {

constexpr int kTileThreads = 256;
constexpr int kTileBN = 128;                       // weight rows per CTA
constexpr int kTileBK = 64;                        // K per slab
constexpr int kTileStaticSmemReserve = 2560;       // block-scan storage + what the compiler adds (2304 B as built)

template <int kBM, int kStages>
struct TileCfg {
  static constexpr int kActBytes = kBM * kTileBK * 2;           // bf16 activations
  static constexpr int kCodeBytes = kTileBN * kTileBK / 2;      // packed e2m1
  static constexpr int kScaleBytes = kTileBN * kTileBK / 16;    // e4m3, 4 per row
  static constexpr int kStageBytes = kActBytes + kCodeBytes + kScaleBytes;
  static constexpr int kWeightTileBytes = kTileBN * kTileBK * 2;  // one dequantized bf16 slab
  static constexpr int kSmemBytes = kStages * kStageBytes + 2 * kWeightTileBytes;
  static constexpr int kWarpRows = kBM / 2;                     // tokens per warp
  static constexpr int kMTiles = kWarpRows / 16;
  static_assert(kBM == 64 || kBM == 128, "token tile");
  static_assert(kStages >= 3, "the slab after next must be in flight while one is multiplied");
};

// Byte offset of 16-byte chunk c of row r in a [rows x 64 bf16] swizzled tile.
__device__ __forceinline__ int tile_chunk(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&d)[4], const void* smem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(s));
}

// 8 e2m1 codes -> 4 bf16x2 registers in K order, times the block scale (bf16x2, * 2^119). Codes in K
// order (linear / swizzled layouts) are regrouped by prmt; the tiled layout stores them in the order
// K 0 2 4 6 1 3 5 7, which dequant_word's (nibble i, nibble i + 4) pairing already puts in K order.
template <bool kPairedCodes>
__device__ __forceinline__ uint4 dequant_word_natural(uint32_t w, uint32_t scale2) {
  if constexpr (kPairedCodes) {
    uint32_t r[4];
    dequant_word(w, scale2, r);
    return make_uint4(r[0], r[1], r[2], r[3]);
  }
  const uint32_t u = w & 0x0F0F0F0Fu, v = (w >> 4) & 0x0F0F0F0Fu;
  uint32_t r[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // bytes: [u_j, sign-replicate of u_j (= 0), v_j, sign-replicate of v_j (= 0)]. prmt's selector msb
    // replicates the sign; __byte_perm would mask the selectors to 3 bits (copying u_j, v_j instead).
    const uint32_t sel = j | ((8 + j) << 4) | ((4 + j) << 8) | ((12 + j) << 12);
    uint32_t x;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(x) : "r"(u), "r"(v), "r"(sel));
    r[j] = bf16x2_mul((x * 0x1040u) & 0x81C081C0u, scale2);
  }
  return make_uint4(r[0], r[1], r[2], r[3]);
}

// The (expert, token tile) of CTA row `j`: block scan of ceil(rows_e / kBM) in expert order.
// Returns false if j is past the last tile. All kTileThreads threads of the block call it (it synchronizes).
template <int kBM>
__device__ __forceinline__ bool find_token_tile(const MoeGemmParams& p, int j, int& expert, int64_t& row0, int& rows) {
  using Scan = cub::BlockScan<int, kTileThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int found[2];
  if (threadIdx.x == 0) found[0] = -1;
  __syncthreads();
  int carry = 0;
  for (int base = 0; base < p.E; base += kTileThreads) {
    const int e = base + threadIdx.x;
    int tiles = 0;
    if (e < p.E) {
      const int64_t n = clamped_offset(p, e + 1) - clamped_offset(p, e);
      tiles = n > 0 ? static_cast<int>((n + kBM - 1) / kBM) : 0;
    }
    int incl = 0, total = 0;
    Scan(scan_storage).InclusiveSum(tiles, incl, total);
    const int first = carry + incl - tiles;
    if (tiles > 0 && j >= first && j < first + tiles) {
      found[0] = e;
      found[1] = j - first;
    }
    carry += total;
    __syncthreads();                                 // scan storage reused by the next chunk
  }
  expert = found[0];
  if (expert < 0) return false;
  const int64_t start = clamped_offset(p, expert), end = clamped_offset(p, expert + 1);
  row0 = start + int64_t(found[1]) * kBM;
  rows = static_cast<int>((end - row0 < kBM ? end - row0 : kBM));
  return true;
}

// Rows before offsets[0] / after offsets[E] belong to no expert: the CTAs of token-tile row 0 write
// zeros into their columns [n0, n0 + width) of those rows.
__device__ __forceinline__ void zero_rows_outside_experts(const MoeGemmParams& p, int n0, int width, int tid,
                                                          int threads) {
  const int64_t lo = clamped_offset(p, 0), hi = clamped_offset(p, p.E);
  const int ncols = min(width, p.N - n0);
  for (int64_t i = tid; i < (lo + p.M - hi) * ncols; i += threads) {
    const int64_t r = i / ncols;
    const int64_t row = r < lo ? r : hi + (r - lo);
    p.out[row * p.N + n0 + i % ncols] = __float2bfloat16(0.f);
  }
}

template <int kBM, int kStages, int kLayout>
__global__ void __launch_bounds__(kTileThreads) moe_gemm_tile_kernel(const MoeGemmParams p) {
  using Cfg = TileCfg<kBM, kStages>;
  extern __shared__ __align__(128) uint8_t tile_smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int n0 = blockIdx.x * kTileBN;

  if (blockIdx.y == 0) zero_rows_outside_experts(p, n0, kTileBN, tid, kTileThreads);
  int expert, rows;
  int64_t row0;
  if (!find_token_tile<kBM>(p, blockIdx.y, expert, row0, rows)) return;

  uint8_t* stages = tile_smem;
  uint8_t* wtile = tile_smem + kStages * Cfg::kStageBytes;     // 2 dequantized bf16 slabs
  const int steps = p.K / kTileBK;

  auto load_slab = [&](int s, int buf) {
    uint8_t* st = stages + buf * Cfg::kStageBytes;
    const int k0 = s * kTileBK;
#pragma unroll
    for (int j = 0; j < kBM * 8 / kTileThreads; ++j) {           // activations: kBM rows x 8 chunks
      const int i = tid + j * kTileThreads, r = i >> 3, c = i & 7;
      const bool valid = r < rows;
      const __nv_bfloat16* src = p.a + (valid ? (row0 + r) * p.K + k0 + c * 8 : 0);
      cp_async_16(st + tile_chunk(r, c), src, valid ? 16 : 0);
    }
    uint8_t* codes = st + Cfg::kActBytes;
    {                                                            // codes: 128 rows x 2 chunks (1 per thread)
      const int r = tid >> 1, c = tid & 1;
      const int n = min(n0 + r, p.N - 1);
      cp_async_16(codes + r * 32 + c * 16, p.w + weight_index<kLayout>(p, expert, n, k0 / 2 + c * 16), 16);
    }
    uint8_t* scales = codes + Cfg::kCodeBytes;
    if (tid < kTileBN) {                                         // scales: 128 rows x 4 bytes
      const int n = min(n0 + tid, p.N - 1);
      cp_async_small<4>(scales + tid * 4, p.w_scale + scale_index<kLayout>(p, expert, n, k0 / 16), 4);
    }
  };

  // Thread t dequantizes 32 codes (two scale blocks) of weight row t / 2, K half t % 2 of the slab.
  auto dequant_slab = [&](int buf, int wbuf) {
    const uint8_t* st = stages + buf * Cfg::kStageBytes;
    const int r = tid >> 1, h = tid & 1;
    const uint4 codes = *reinterpret_cast<const uint4*>(st + Cfg::kActBytes + r * 32 + h * 16);
    const uint16_t sc = *reinterpret_cast<const uint16_t*>(st + Cfg::kActBytes + Cfg::kCodeBytes + r * 4 + h * 2);
    uint32_t scale2[2];
    convert_scales_n<2>(make_uint2(sc, 0), scale2);
    uint8_t* dst = wtile + wbuf * Cfg::kWeightTileBytes;
    const uint32_t words[4] = {codes.x, codes.y, codes.z, codes.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
      *reinterpret_cast<uint4*>(dst + tile_chunk(r, h * 4 + i)) = dequant_word_natural<kPairedCodes<kLayout>>(words[i], scale2[i >> 1]);
  };

  const int wm = warp >> 2, wn = warp & 3;
  float acc[Cfg::kMTiles][4][4];
#pragma unroll
  for (int mt = 0; mt < Cfg::kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

  auto mma_slab = [&](int buf, int wbuf) {
    const uint8_t* act = stages + buf * Cfg::kStageBytes;
    const uint8_t* wt = wtile + wbuf * Cfg::kWeightTileBytes;
#pragma unroll
    for (int kk = 0; kk < kTileBK / 16; ++kk) {
      uint32_t af[Cfg::kMTiles][4], bf[2][4];
#pragma unroll
      for (int mt = 0; mt < Cfg::kMTiles; ++mt) {   // 16 tokens x 16 K: matrices (rows 0-7|8-15) x (k 0-7|8-15)
        const int r = wm * Cfg::kWarpRows + mt * 16 + (lane & 15);
        ldmatrix_x4(af[mt], act + tile_chunk(r, kk * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int pair = 0; pair < 2; ++pair) {        // 16 weight rows x 16 K: (n 0-7, k lo | k hi), (n 8-15, ...)
        const int r = wn * 32 + pair * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(bf[pair], wt + tile_chunk(r, kk * 2 + ((lane >> 3) & 1)));
      }
#pragma unroll
      for (int mt = 0; mt < Cfg::kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
          mma_bf16_16816(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt >> 1][(nt & 1) * 2],
                         bf[nt >> 1][(nt & 1) * 2 + 1]);
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) load_slab(s, s);
    cp_async_commit();
  }
  cp_async_wait<kStages - 2>();
  __syncthreads();
  dequant_slab(0, 0);

  for (int s = 0; s < steps; ++s) {
    cp_async_wait<kStages - 3>();                  // this thread's copies of slab s + 1 landed
    __syncthreads();                               // ... everyone's; slab s - 1 fully consumed
    {
      const int sn = s + kStages - 1;
      if (sn < steps) load_slab(sn, sn % kStages);
      cp_async_commit();
    }
    if (s + 1 < steps) dequant_slab((s + 1) % kStages, (s + 1) & 1);
    mma_slab(s % kStages, s & 1);
  }
  cp_async_wait<0>();

  // epilogue: acc[mt][nt] = tokens (g, g + 8) of m-tile mt x weight rows (2q, 2q + 1) of n-tile nt
  const float alpha = expert_alpha(p, expert) * kEpilogueShift;
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < Cfg::kMTiles; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int tok = wm * Cfg::kWarpRows + mt * 16 + g + h * 8;
      if (tok >= rows) continue;
      __nv_bfloat16* orow = p.out + (row0 + tok) * p.N;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int n = n0 + wn * 32 + nt * 8 + 2 * q;
        const float v0 = acc[mt][nt][2 * h] * alpha, v1 = acc[mt][nt][2 * h + 1] * alpha;
        if (n + 1 < p.N && (p.N & 1) == 0) {
          *reinterpret_cast<__nv_bfloat162*>(orow + n) = __floats2bfloat162_rn(v0, v1);
        } else {
          if (n < p.N) orow[n] = __float2bfloat16(v0);
          if (n + 1 < p.N) orow[n + 1] = __float2bfloat16(v1);
        }
      }
    }
  }
}

// Returns false (launching nothing) if the config's shared memory exceeds smem_limit or M is too large
// for grid.y.
template <int kBM, int kStages>
bool launch_tile(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  using Cfg = TileCfg<kBM, kStages>;
  constexpr int smem = Cfg::kSmemBytes;
  if (smem > smem_limit) return false;
  const int64_t slots = p.M < p.E ? p.M : p.E;
  if (slots == 0) return true;
  const int64_t ytiles = (p.M + kBM - 1) / kBM + slots;      // >= sum over experts of ceil(rows / kBM)
  if (ytiles > 65535) return false;                          // > ~8M rows: the streaming kernels take it
  const dim3 grid((p.N + kTileBN - 1) / kTileBN, static_cast<unsigned>(ytiles));
  auto launch = [&](auto* k) {
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, kTileThreads, smem, stream>>>(p);
  };
  if (p.scale_layout == kScaleLinear) launch(moe_gemm_tile_kernel<kBM, kStages, kScaleLinear>);
  else if (p.scale_layout == kTiled) launch(moe_gemm_tile_kernel<kBM, kStages, kTiled>);
  else launch(moe_gemm_tile_kernel<kBM, kStages, kScaleSwizzled>);
  return true;
}

}  // namespace moe
}  // namespace k2k
