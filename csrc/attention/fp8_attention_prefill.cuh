// Prefill layout (q_len > 1, and decode with GQA groups >= 32; D_qk = D_v in {64, 128}): FlashAttention-2
// structure on mma.sync.
// One CTA = 64 * kMT / kWS packed (token, head) rows of one sequence and KV head; each of the 4 warps
// owns kMT m16 tiles and walks all keys (with the warp key split below: its part of every chunk's
// keys). K/V chunks (64 keys, but 32 at kMT = 2 with D 128) are converted
// FP8 -> f16 ONCE per CTA into shared memory (double buffered: the next chunk's bytes are in registers
// while the warps compute on this one), and every warp reads them with ldmatrix, so the conversion and
// the global/L2 reads are shared by all the CTA's rows. At kMT = 2, Q stays in shared memory (its
// fragments are re-read per chunk) to leave registers for the O tiles; at kMT = 1 it is held in
// registers (CfgP::kQInRegs). Same numerics as the decode kernels: f16 Q (clamped), exact f16 K/V, fp32
// accumulation and softmax, k_scale folded into the exponent scale, v_scale into the output.
// kMT = 2 (128-row CTAs) when the host estimates q_len > 1: each K/V fragment a warp loads feeds both m-tiles' MMAs, and the
// two tiles' MMA chains are independent (the one-tile version stalled on dependent chains and ldmatrix;
// Nsight, sixth session: "wait" 1.59, short scoreboard 0.96 per issue). kMT = 1 (64-row CTAs, or 32 /
// 16 rows with the warp key split below) for decode, where a KV head's rows are its GQA group: 128
// rows would leave warps idle at groups 32 / 64 (a group of 128 takes two 64-row tiles, each
// converting the head's K/V: correct, not measured).
// Key-range splits (flash-decoding) as in the decode layouts: with num_splits > 1 each CTA walks its
// split's share of the chunks and writes normalized fp32 O and its log2 LSE for the merge. That
// makes the layout usable for decode with large GQA groups (64 heads of a KV head in one CTA convert
// each K/V byte once, where 16-row tiles convert it once per 16 heads).
// Warp key split (kWS = 2 or 4, one m16 tile per warp): when a KV head has only <= 32 or <= 16 rows
// (decode with GQA groups 17-32 / <= 16), kWS warps share each 16-row tile and split every 64-key chunk between
// them (32 or 16 keys each); at the end they merge their (max, sum, O) through shared memory, as the
// key splits are merged across CTAs. Without it a 64-row CTA at group 32 left two of its four warps
// idle while the CTA converted the head's K/V for them.
#pragma once
#include "attention/fp8_attention_kernel.cuh"
#include "attention/fp8_attention_prefill_common.cuh"
#include "attention/fp8_attention_prefill_wgmma.cuh"

namespace k2k {
namespace attn {

template <int D, int MT, int WS = 1>
struct CfgP {
  static_assert(D == 64 || D == 128, "prefill layout: D_qk = D_v in {64, 128}");
  static_assert(MT == 1 || MT == 2, "prefill layout: 1 or 2 m16 tiles per warp");
  static_assert(WS == 1 || WS == 2 || WS == 4, "prefill layout: 1, 2 or 4 warps per row tile");
  static_assert(WS == 1 || MT == 1, "the warp key split is for one m16 tile per warp (decode)");
  static constexpr int kMT = MT;                        // m16 tiles per warp
  static constexpr int kWS = WS;                        // warps sharing a row tile (each a part of every chunk's keys)
  static constexpr int kRowTiles = kWarps / kWS;        // distinct row tiles of the CTA
  static constexpr int kRowsWarp = 16 * kMT;            // 16 or 32 rows
  static constexpr int kRowsCta = kRowTiles * kRowsWarp;   // 128, 64, 32 or 16 rows
  // MT = 1 keeps Q in registers (kKS x 4 per thread) and stages it through stage 1's K tile, which
  // holds exactly 64 rows at 64 keys per chunk; MT = 2 has no registers to spare: Q stays in shared
  // memory, and at D 128 chunks are 32 keys so that Q + 2 stages fit the 99 KB of SM120 (and the
  // score tile and the next chunk's bytes fit the registers). At D 64 both fit at 64 keys (ninth
  // session, H200: 8K causal 2669-2673 -> 2247-2260 us; 64 keys at D 128 through a cp.async staging
  // area, which frees the prefetch registers, measured 1-2 % slower, branch exp/prefill-staged64).
  static constexpr bool kQInRegs = MT == 1;
  static constexpr int kKeys = kQInRegs || D == 64 ? 64 : 32;   // keys per chunk
  static constexpr int kStride = D + 8;                 // f16 per smem row: +16 B keeps ldmatrix conflict-free
  static constexpr int kTile = kKeys * kStride;         // f16 elements of one K or V tile
  static constexpr int kQElems = kQInRegs ? 0 : kRowsCta * kStride;   // f16 elements of the Q tile in smem
  static_assert(!kQInRegs || kRowsCta <= kKeys, "Q staged in stage 1's K tile");
  static constexpr int kLoads = kKeys * D / 16 / kThreads;   // 16-byte loads per thread per tile (D/64)
  static_assert(kLoads >= 1 && kKeys * D / 16 % kThreads == 0, "whole 16-byte pieces per thread");
  static constexpr int kSmemBytes = (kQElems + 2 * 2 * kTile) * 2;   // Q + 2 stages x (K, V), f16
  static constexpr int kWarpKeys = kKeys / kWS;          // keys of a chunk one warp computes
  static constexpr int kNT = kWarpKeys / 8;             // S n-tiles per warp and chunk
  static_assert(kWarpKeys % 16 == 0, "whole 16-key PV steps per warp");
  // warp key split: per part > 0, each lane's O fragments, row maxima and partial sums (fp32), read by
  // part 0 after the loop from the (then free) K/V tiles
  static constexpr int kMergeVals = D / 2 + 4;
  static_assert((kWS - 1) * kRowTiles * kMergeVals * 32 * 4 <= 2 * 2 * kTile * 2, "merge buffer fits the K/V tiles");
  static constexpr int kKS = D / 16;                    // QK k-steps; PV n-tiles = D / 8
};

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

// 16 e4m3 bytes -> 16 f16 (exact), stored as two 16-byte words.
__device__ __forceinline__ void store_f16x16(__half* dst, const uint4 v) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t h[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    h[2 * i] = e4m3x2_to_f16x2(w[i]);
    h[2 * i + 1] = e4m3x2_to_f16x2(w[i] >> 16);
  }
  *reinterpret_cast<uint4*>(dst) = make_uint4(h[0], h[1], h[2], h[3]);
  *reinterpret_cast<uint4*>(dst + 8) = make_uint4(h[4], h[5], h[6], h[7]);
}

template <int D, int MT, int WS>
__global__ void __launch_bounds__(kThreads, 2) fp8_attention_prefill_kernel(const Fp8AttnParams p) {
  using C = CfgP<D, MT, WS>;
  extern __shared__ __align__(16) uint8_t smem[];
  __half* tiles = reinterpret_cast<__half*>(smem) + C::kQElems;   // [stage][K | V][kKeys][kStride]
  // [kRowsCta][kStride]: its own region (MT = 2) or stage 1's K tile until Q is in registers (MT = 1)
  __half* q_s = C::kQInRegs ? tiles + 2 * C::kTile : reinterpret_cast<__half*>(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // (kWS == 1 spelled out: the compiler cannot prove warp < 4, and these must fold away there)
  const int rt = C::kWS == 1 ? warp : warp % C::kRowTiles;   // this warp's row tile (kRowsWarp rows)
  const int part = C::kWS == 1 ? 0 : warp / C::kRowTiles;    // its share of each chunk's keys
  const int pkey = part * C::kWarpKeys;                  // first key of that share within the chunk

  PrefillCta cta;
  if (!prefill_cta<D>(p, cta)) return;
  const int G = cta.G, n_rows = cta.n_rows, L = cta.L, q_len = cta.q_len, h = cta.h;
  const float sl2 = cta.sl2;

  for (int tile = cta.tile0; tile * C::kRowsCta < n_rows; tile += p.row_tiles) {
    const int row0 = tile * C::kRowsCta;
    // ---- Q (kRowsCta rows) -> f16 in shared memory (kMT = 2: A fragments re-read per chunk with
    // ldmatrix; kMT = 1: read into registers once, below)
    __syncthreads();
    for (int i = threadIdx.x; i < C::kRowsCta * (D / 8); i += kThreads) {
      const int r = i / (D / 8), cc = i % (D / 8), row = row0 + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < n_rows) {
        const int qi = row / G, hh = row - qi * G;
        v = __ldg(reinterpret_cast<const uint4*>(p.q + (int64_t(cta.q_start + qi) * p.Hq + h * G + hh) * D) + cc);
      }
      v = make_uint4(bf16x2_to_f16x2_clamped(v.x), bf16x2_to_f16x2_clamped(v.y), bf16x2_to_f16x2_clamped(v.z),
                     bf16x2_to_f16x2_clamped(v.w));
      *reinterpret_cast<uint4*>(q_s + r * C::kStride + cc * 8) = v;
    }
    // (the barrier before the first chunk's math publishes q_s; MT = 1 reads it into registers first)
    uint32_t qr[C::kQInRegs ? C::kKS : 1][4];
    if constexpr (C::kQInRegs) {
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < C::kKS; ++kk)
        ldsm_x4(qr[kk], q_s + (rt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kStride + kk * 16 + (lane >> 4) * 8);
      __syncthreads();                                   // stage 1 free again before any chunk lands there
    }

    int lim[C::kMT][2];                                  // row rt * kRowsWarp + mt * 16 + g + rr * 8
    int warp_end = 0, warp_lim_min = INT_MAX;
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int row = row0 + rt * C::kRowsWarp + mt * 16 + g + rr * 8;
        lim[mt][rr] = 0;
        if (row < n_rows) lim[mt][rr] = p.causal ? min(L, L - q_len + row / G + 1) : L;
        warp_end = max(warp_end, lim[mt][rr]);
        warp_lim_min = min(warp_lim_min, lim[mt][rr]);
      }
    // keys this warp needs (warp-uniform) and the CTA's range. Sliding window: the warp's first row
    // (rows are token-major) starts its window earliest, the CTA's first row the CTA's; the CTA loads
    // only chunks from key_begin (on the 16-key grid) and a warp skips chunks wholly outside its rows'
    // windows; inside a chunk key_visible masks each element.
    warp_end = max(warp_end, __shfl_xor_sync(0xffffffffu, warp_end, 4));
    warp_end = max(warp_end, __shfl_xor_sync(0xffffffffu, warp_end, 8));
    warp_end = max(warp_end, __shfl_xor_sync(0xffffffffu, warp_end, 16));
    warp_lim_min = min(warp_lim_min, __shfl_xor_sync(0xffffffffu, warp_lim_min, 4));
    warp_lim_min = min(warp_lim_min, __shfl_xor_sync(0xffffffffu, warp_lim_min, 8));
    warp_lim_min = min(warp_lim_min, __shfl_xor_sync(0xffffffffu, warp_lim_min, 16));
    const int warp_begin = window_begin(L - q_len + (row0 + rt * C::kRowsWarp) / G, p.window_left);
    const PrefillKeys keys = prefill_keys(p, cta, row0, C::kRowsCta, C::kKeys);
    const int kbase = keys.kbase, c_begin = keys.c_begin, c_end = keys.c_end;
    auto load = [&](int c, uint4 (&kr)[C::kLoads], uint4 (&vr)[C::kLoads]) {
      prefill_load_chunk<D, C::kLoads, kThreads>(p, cta, keys, kbase + c * C::kKeys, threadIdx.x, kr, vr);
    };
    auto store = [&](int stage, const uint4 (&kr)[C::kLoads], const uint4 (&vr)[C::kLoads]) {
      __half* ks = tiles + stage * 2 * C::kTile;
#pragma unroll
      for (int i = 0; i < C::kLoads; ++i) {
        const int u = threadIdx.x + i * kThreads;
        const int off = (u / (D / 16)) * C::kStride + (u % (D / 16)) * 16;
        store_f16x16(ks + off, kr[i]);
        store_f16x16(ks + C::kTile + off, vr[i]);
      }
    };

    float o[C::kMT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
      for (int j = 0; j < D / 8; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
    float m[C::kMT][2], l[C::kMT][2];
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
    uint4 kr[C::kLoads], vr[C::kLoads];
    if (c_begin < c_end) {
      load(c_begin, kr, vr);
      store(0, kr, vr);
    }
    __syncthreads();                                     // q_s and stage 0 written
    const __half* q_warp = q_s + (rt * C::kRowsWarp + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kStride + (lane >> 4) * 8;
    for (int c = c_begin; c < c_end; ++c) {
      const int stage = (c - c_begin) & 1;
      if (c + 1 < c_end) load(c + 1, kr, vr);            // in flight during this chunk's math
      const int kb = kbase + c * C::kKeys;
      if (kb < warp_end && kb + C::kKeys > warp_begin) {
        const __half* ks = tiles + stage * 2 * C::kTile;
        const __half* vs = ks + C::kTile;
        // ---- S = Q K^T for both m-tiles: kNT n-tiles of 8 keys; each K fragment feeds 2 x 2 MMAs
        float s[C::kMT][C::kNT][4];
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
          for (int j = 0; j < C::kNT; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < C::kKS; ++kk) {
          uint32_t qf[C::kMT][4];
          if constexpr (C::kQInRegs) {
#pragma unroll
            for (int i = 0; i < 4; ++i) qf[0][i] = qr[kk][i];
          } else {
#pragma unroll
            for (int mt = 0; mt < C::kMT; ++mt) ldsm_x4(qf[mt], q_warp + mt * 16 * C::kStride + kk * 16);
          }
#pragma unroll
          for (int j = 0; j < C::kNT; j += 2) {
            uint32_t bk[4];   // b0, b1 of n-tile j, then of j + 1
            ldsm_x4(bk, ks + (pkey + j * 8 + (lane & 7) + (lane >> 4) * 8) * C::kStride + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int mt = 0; mt < C::kMT; ++mt) {
              mma_f16(s[mt][j], qf[mt][0], qf[mt][1], qf[mt][2], qf[mt][3], bk[0], bk[1]);
              mma_f16(s[mt][j + 1], qf[mt][0], qf[mt][1], qf[mt][2], qf[mt][3], bk[2], bk[3]);
            }
          }
        }
        // ---- online softmax, per m-tile (rows g, g + 8 of tile mt). A chunk every key of which every
        // row of the warp sees (causal: below all the warp's diagonals; window: inside all its windows)
        // needs no per-element mask: the same values without the compares (warp-uniform branch).
        const bool unmasked = kb + C::kKeys <= warp_lim_min && unsigned(warp_end - 1 - kb) <= unsigned(p.window_left);
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt) {
          float mx[2] = {-INFINITY, -INFINITY};
          if (unmasked) {
#pragma unroll
            for (int j = 0; j < C::kNT; ++j)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                s[mt][j][e] *= sl2;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][j][e]);
              }
          } else {
#pragma unroll
            for (int j = 0; j < C::kNT; ++j)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int key = kb + pkey + j * 8 + 2 * t + (e & 1);
                s[mt][j][e] = key_visible(key, lim[mt][e >> 1], p.window_left) ? s[mt][j][e] * sl2 : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][j][e]);
              }
          }
          float alpha[2], base[2];
#pragma unroll
          for (int rr = 0; rr < 2; ++rr) {
            base[rr] = quad_max_update(m[mt][rr], l[mt][rr], mx[rr], alpha[rr]);
          }
#pragma unroll
          for (int j = 0; j < C::kNT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              s[mt][j][e] = fast_exp2(s[mt][j][e] - base[e >> 1]);
              l[mt][e >> 1] += s[mt][j][e];
            }
          // alpha is exactly 1 for a row whose maximum did not grow: skip the rescale when that holds for
          // every row of the m-tile (the same result: x * 1.0f == x), which later chunks mostly do.
          if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
            for (int j = 0; j < D / 8; ++j) {
              o[mt][j][0] *= alpha[0]; o[mt][j][1] *= alpha[0];
              o[mt][j][2] *= alpha[1]; o[mt][j][3] *= alpha[1];
            }
          }
        }
        // ---- O += P V: k-step kk = keys 16kk..16kk+15 = S n-tiles 2kk, 2kk+1; each V fragment feeds
        // both m-tiles
#pragma unroll
        for (int kk = 0; kk < C::kWarpKeys / 16; ++kk) {
          uint32_t a[C::kMT][4];
#pragma unroll
          for (int mt = 0; mt < C::kMT; ++mt) {
            a[mt][0] = pack_f16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            a[mt][1] = pack_f16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            a[mt][2] = pack_f16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            a[mt][3] = pack_f16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
          }
#pragma unroll
          for (int j = 0; j < D / 8; j += 2) {
            uint32_t bv[4];   // b0, b1 of channel n-tile j, then of j + 1
            ldsm_x4_trans(bv, vs + (pkey + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kStride + j * 8 + (lane >> 4) * 8);
#pragma unroll
            for (int mt = 0; mt < C::kMT; ++mt) {
              mma_f16(o[mt][j], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bv[0], bv[1]);
              mma_f16(o[mt][j + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bv[2], bv[3]);
            }
          }
        }
      }
      if (c + 1 < c_end) store(stage ^ 1, kr, vr);       // that stage was last read in chunk c - 1
      __syncthreads();
    }

    if constexpr (C::kWS > 1) {
      // ---- warp key split: part 0 of each row tile takes in the other parts' (max, sum, O), lane by
      // lane (the same rows and channels in every part), rescaled to the common maximum
      float* red = reinterpret_cast<float*>(tiles);      // [part - 1][rt][value][lane]; tiles are free now
      __syncthreads();                                   // every warp is past its last chunk
      if (part > 0) {
        float* dst = red + ((part - 1) * C::kRowTiles + rt) * C::kMergeVals * 32 + lane;
#pragma unroll
        for (int j = 0; j < D / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) dst[(j * 4 + e) * 32] = o[0][j][e];
        dst[(D / 2 + 0) * 32] = m[0][0];
        dst[(D / 2 + 1) * 32] = m[0][1];
        dst[(D / 2 + 2) * 32] = l[0][0];
        dst[(D / 2 + 3) * 32] = l[0][1];
      }
      __syncthreads();
      if (part == 0) {
#pragma unroll
        for (int q = 1; q < C::kWS; ++q) {
          const float* src = red + ((q - 1) * C::kRowTiles + rt) * C::kMergeVals * 32 + lane;
          float a_own[2], a_in[2];
#pragma unroll
          for (int rr = 0; rr < 2; ++rr) {
            const float m_in = src[(D / 2 + rr) * 32];
            const float m_new = fmaxf(m[0][rr], m_in);
            const float base = m_new == -INFINITY ? 0.f : m_new;   // both empty: weights 0, sums stay 0
            a_own[rr] = fast_exp2(m[0][rr] - base);
            a_in[rr] = fast_exp2(m_in - base);
            m[0][rr] = m_new;
            l[0][rr] = l[0][rr] * a_own[rr] + src[(D / 2 + 2 + rr) * 32] * a_in[rr];
          }
#pragma unroll
          for (int j = 0; j < D / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              o[0][j][e] = o[0][j][e] * a_own[e >> 1] + src[(j * 4 + e) * 32] * a_in[e >> 1];
        }
      }
    }

    // ---- normalize and write this warp's kRowsWarp rows (part 0 of each row tile)
    if (part != 0) continue;                             // warp-uniform; the next tile starts with a barrier
#pragma unroll
    for (int mt = 0; mt < C::kMT; ++mt) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float lsum = l[mt][rr];
        lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
        lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
        const int row = row0 + rt * C::kRowsWarp + mt * 16 + g + rr * 8;
        if (row >= n_rows) continue;
        prefill_write_row<D>(p, cta, row, t, m[mt][rr], lsum, [&](int j, int e) { return o[mt][j][2 * rr + e]; });
      }
    }
  }
}

// Resident CTAs per SM of the prefill kernel (registers + shared memory), for the split heuristic.
template <int D, int MT, int WS>
int ctas_per_sm_prefill() {
  constexpr int kSmem = CfgP<D, MT, WS>::kSmemBytes;
  auto kernel = fp8_attention_prefill_kernel<D, MT, WS>;
  if (kSmem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  int n = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, kSmem);
  return n > 0 ? n : 1;
}

// The instantiations: 128-row CTAs (m_tiles 2) or one m16 tile per warp with 1, 2 or 4 warps per row
// tile (64-, 32- or 16-row CTAs).
template <int D>
int ctas_per_sm_prefill(int m_tiles, int warp_split) {
  if (m_tiles == 2) return ctas_per_sm_prefill<D, 2, 1>();
  if (warp_split == 4) return ctas_per_sm_prefill<D, 1, 4>();
  if (warp_split == 2) return ctas_per_sm_prefill<D, 1, 2>();
  return ctas_per_sm_prefill<D, 1, 1>();
}

template <int D, int MT, int WS>
cudaError_t launch_prefill_cfg(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_prefill_kernel(fp8_attention_prefill_kernel<D, MT, WS>, n_ctas, kThreads, CfgP<D, MT, WS>::kSmemBytes, p,
                               stream);
}

// p.prefill_m_tiles and p.prefill_warp_split pick the instantiation.
template <int D>
cudaError_t launch_prefill(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  if (p.prefill_wgmma != 0) {                          // sm_90a: the wgmma kernel (same work unit as <D, 2, 1>)
    if (p.prefill_m_tiles != 2 || p.prefill_warp_split != 1) return cudaErrorInvalidValue;
    return launch_prefill_wgmma<D>(p, n_ctas, stream);
  }
  if (p.prefill_m_tiles == 2 && p.prefill_warp_split == 1) return launch_prefill_cfg<D, 2, 1>(p, n_ctas, stream);
  if (p.prefill_m_tiles == 1) {
    if (p.prefill_warp_split == 1) return launch_prefill_cfg<D, 1, 1>(p, n_ctas, stream);
    if (p.prefill_warp_split == 2) return launch_prefill_cfg<D, 1, 2>(p, n_ctas, stream);
    if (p.prefill_warp_split == 4) return launch_prefill_cfg<D, 1, 4>(p, n_ctas, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attn
}  // namespace k2k
