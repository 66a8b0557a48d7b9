// Prefill attention for sm_90a: the prefill layout's 128-row CTAs (fp8_attention_prefill.cuh) on warpgroup
// MMA (wgmma) instead of mma.sync.
//
// Why: the mma.sync kernel reaches 0.76-0.77x SDPA-flash (BF16) at 8K causal D 128 on the H200,
// latency-bound at 8 warps per SM (Nsight Compute, tenth session: issue slots 35 % busy, 255 registers).
// wgmma runs asynchronously: a warpgroup's tensor work proceeds while the other warpgroup does its
// softmax, and one instruction covers 64 rows x kKeys keys x 16 channels.
//
// Built for sm_90a only (CUTE_ARCH_MMA_SM90A_ENABLED); other archs get an empty stub that the host never
// selects (Fp8AttnParams::prefill_wgmma is set for compute capability 9 only). SM120 has no wgmma: the
// mma.sync kernel stays its path.
//
// One CTA = two warpgroups = 128 packed (token, head) rows of one sequence and KV head (the same work
// unit, grid and row tiles as the mma.sync kernel's kMT = 2); warpgroup w owns rows 64w .. 64w + 63,
// warp w' of it 16, lane (g, t) rows g and g + 8 of those (the mma.sync fragment layout, which is
// also the layout of wgmma's register A operand and accumulators).
// Per chunk of kKeys keys:
//   S = Q K^T   m64 n(kKeys) k16 wgmmas, D / 16 of them: A = Q from registers (f16, loaded once per
//               tile), B = the K tile in shared memory (K-major);
//   online softmax on the S accumulators (same code and numerics as the mma.sync kernel), P -> f16;
//   O += P V    m64 n(D) k16 wgmmas, kKeys / 16 of them: A = P from registers, B = the V tile
//               (MN-major: channels contiguous, wgmma's transposed-B mode).
// K and V tiles share one layout: column blocks of 64 channels, each [kKeys][128 bytes] f16 with the
// 128-byte swizzle (16-byte chunk c of key r at c ^ (r % 8)), 1024-byte aligned. As K-major B, 8-key
// groups are 1024 bytes apart (stride byte offset) and k-step kk starts (kk / 4) blocks and
// (kk % 4) * 32 bytes in; as MN-major B, 8-key groups are 1024 bytes apart (stride byte offset), the
// channel blocks kKeys * 128 bytes apart (leading byte offset), and k-step kk starts kk * 2048 bytes in
// (CuTe's canonical GMMA layouts, cute/atom/mma_traits_sm90_gmma.hpp).
// Conversion FP8 -> f16 as the mma.sync kernel: the next chunk's bytes are loaded into registers
// before this chunk's math and stored, converted, into the other stage while the P V wgmmas run;
// one barrier per chunk.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <utility>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "k2kernels attention: build Hopper as sm_90a (the wgmma prefill kernel needs it); plain sm_90 would run an empty kernel"
#endif

#include <cute/arch/mma_sm90_gmma.hpp>

#include "attention/fp8_attention_kernel.cuh"
#include "attention/fp8_attention_prefill_common.cuh"
#include "common/wgmma.cuh"

namespace k2k {
namespace attn {

constexpr int kWgThreads = 256;                       // two warpgroups

template <int D, int kKeys>
struct CfgW {
  static_assert(D == 64 || D == 128, "wgmma prefill: D_qk = D_v in {64, 128}");
  static_assert(kKeys % 16 == 0 && kKeys >= 16 && kKeys <= 256, "keys per chunk: whole 16-key P V steps, wgmma N <= 256");
  static constexpr int kRowsCta = 128;
  static constexpr int kBlocks = D / 64;              // 64-channel column blocks of a K or V tile
  static constexpr int kBlockBytes = kKeys * 128;     // one block: kKeys rows x 128 bytes (f16)
  static constexpr int kTileBytes = kBlocks * kBlockBytes;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K, V
  static constexpr int kSmemBytes = 2 * kStageBytes;  // two stages
  static constexpr int kLoads = kKeys * D / 16 / kWgThreads;   // 16-byte FP8 pieces per thread per tile
  static_assert(kLoads >= 1 && kKeys * D / 16 % kWgThreads == 0, "whole 16-byte pieces per thread");
  static_assert(kBlockBytes % 1024 == 0, "blocks on the 1024-byte swizzle period");
  static constexpr int kKS = D / 16;                  // QK k-steps
  static constexpr int kPS = kKeys / 16;              // PV k-steps
  static constexpr int kSRegs = kKeys / 2;            // 64 x kKeys fp32 over 128 threads
  static constexpr int kORegs = D / 2;
};

#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
template <int N, cute::SM90::GMMA::Major kMajorB>
struct WgOp;
#define K2K_ATTN_WG_OP(N)                                                                                          \
  template <cute::SM90::GMMA::Major kMajorB>                                                                       \
  struct WgOp<N, kMajorB> {                                                                                        \
    using Op = cute::SM90::GMMA::MMA_64x##N##x16_F32F16F16_RS<cute::SM90::GMMA::Major::K, kMajorB>;               \
  };
K2K_ATTN_WG_OP(64)
K2K_ATTN_WG_OP(96)
K2K_ATTN_WG_OP(128)
#undef K2K_ATTN_WG_OP

#endif

template <int D, int kKeys>
__global__ void __launch_bounds__(kWgThreads, 1) fp8_attention_prefill_wgmma_kernel(const Fp8AttnParams p) {
#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
  using C = CfgW<D, kKeys>;
  using Major = cute::SM90::GMMA::Major;
  extern __shared__ __align__(1024) uint8_t wg_smem[];   // [stage][K | V][block][kKeys][128 B], swizzled
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  if (tid == 0 && (static_cast<uint32_t>(__cvta_generic_to_shared(wg_smem)) & 1023u) != 0) __trap();
  const int wg = warp >> 2;                          // warpgroup: rows 64 wg ..
  const int wrow = wg * 64 + (warp & 3) * 16 + g;    // this lane's first row in the CTA (+ 8: its second)

  PrefillCta cta;
  if (!prefill_cta<D>(p, cta)) return;
  const int G = cta.G, n_rows = cta.n_rows, L = cta.L, q_len = cta.q_len, h = cta.h;
  const float sl2 = cta.sl2;

  for (int tile = cta.tile0; tile * C::kRowsCta < n_rows; tile += p.row_tiles) {
    const int row0 = tile * C::kRowsCta;
    // ---- Q of rows wrow, wrow + 8 as wgmma A fragments (f16, clamped), straight from global: k-step kk
    // holds channels 16kk + 2t, +1 (regs 0, 1) and 16kk + 8 + 2t, +1 (regs 2, 3)
    uint32_t qf[C::kKS][4];
    int lim[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int row = row0 + wrow + rr * 8;
      const uint32_t* qrow = nullptr;
      lim[rr] = 0;
      if (row < n_rows) {
        const int qi = row / G, hh = row - qi * G;
        qrow = reinterpret_cast<const uint32_t*>(p.q + (int64_t(cta.q_start + qi) * p.Hq + h * G + hh) * D);
        lim[rr] = p.causal ? min(L, L - q_len + qi + 1) : L;
      }
#pragma unroll
      for (int kk = 0; kk < C::kKS; ++kk) {
        qf[kk][rr] = qrow ? bf16x2_to_f16x2_clamped(__ldg(qrow + kk * 8 + t)) : 0u;
        qf[kk][rr + 2] = qrow ? bf16x2_to_f16x2_clamped(__ldg(qrow + kk * 8 + 4 + t)) : 0u;
      }
    }
    // Keys: the CTA's range (as the mma.sync kernel), the warpgroup's (a chunk outside it skips both
    // GEMMs: the skip must be warpgroup-uniform), and per warp whether a chunk needs no element mask.
    // Rows are token-major, so a range's first row starts its window earliest and its last row ends last.
    int warp_lim_min = min(lim[0], lim[1]), warp_end = max(lim[0], lim[1]);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      warp_lim_min = min(warp_lim_min, __shfl_xor_sync(0xffffffffu, warp_lim_min, o));
      warp_end = max(warp_end, __shfl_xor_sync(0xffffffffu, warp_end, o));
    }
    const int wg_last = min(row0 + wg * 64 + 63, n_rows - 1);
    int wg_end = 0;
    if (row0 + wg * 64 < n_rows) wg_end = p.causal ? min(L, L - q_len + wg_last / G + 1) : L;
    const int wg_begin = window_begin(L - q_len + (row0 + wg * 64) / G, p.window_left);
    const PrefillKeys keys = prefill_keys(p, cta, row0, C::kRowsCta, kKeys);
    const int kbase = keys.kbase, c_begin = keys.c_begin, c_end = keys.c_end;
    auto load = [&](int c, uint4 (&kr)[C::kLoads], uint4 (&vr)[C::kLoads]) {
      prefill_load_chunk<D, C::kLoads, kWgThreads>(p, cta, keys, kbase + c * kKeys, tid, kr, vr);
    };
    // This thread's pieces (as loaded) converted to f16: 16 channels = two 16-byte chunks (2j, 2j + 1 of
    // block j / 4) of the swizzled tile
    auto store = [&](int stage, const uint4 (&kr)[C::kLoads], const uint4 (&vr)[C::kLoads]) {
      uint8_t* ks = wg_smem + stage * C::kStageBytes;
#pragma unroll
      for (int i = 0; i < C::kLoads; ++i) {
        const int u = tid + i * kWgThreads;
        const int r = u / (D / 16), piece = u % (D / 16);
        const int c0 = (2 * piece) & 7, sw = r & 7;
        uint8_t* row = ks + (piece >> 2) * C::kBlockBytes + r * 128;
        const uint4 kv[2] = {kr[i], vr[i]};
#pragma unroll
        for (int kvi = 0; kvi < 2; ++kvi) {
          const uint32_t w[4] = {kv[kvi].x, kv[kvi].y, kv[kvi].z, kv[kvi].w};
          uint32_t hx[8];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            hx[2 * e] = e4m3x2_to_f16x2(w[e]);
            hx[2 * e + 1] = e4m3x2_to_f16x2(w[e] >> 16);
          }
          uint8_t* dst = row + kvi * C::kTileBytes;
          *reinterpret_cast<uint4*>(dst + ((c0 ^ sw) << 4)) = make_uint4(hx[0], hx[1], hx[2], hx[3]);
          *reinterpret_cast<uint4*>(dst + (((c0 + 1) ^ sw) << 4)) = make_uint4(hx[4], hx[5], hx[6], hx[7]);
        }
      }
    };
    auto publish = [&]() {                            // generic-proxy stores visible to wgmma, then the barrier
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      __syncthreads();
    };

    float o[C::kORegs];                               // o[4j + e]: row g + 8 (e >> 1), channel 8j + 2t + (e & 1)
#pragma unroll
    for (int i = 0; i < C::kORegs; ++i) o[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    uint4 kr[C::kLoads], vr[C::kLoads];
    __syncthreads();                                  // the previous tile's readers are done with stage 0
    if (c_begin < c_end) {
      load(c_begin, kr, vr);
      store(0, kr, vr);
    }
    publish();
    for (int c = c_begin; c < c_end; ++c) {
      const int stage = (c - c_begin) & 1;
      if (c + 1 < c_end) load(c + 1, kr, vr);         // in flight during this chunk's math
      const int kb = kbase + c * kKeys;
      const uint8_t* ks = wg_smem + stage * C::kStageBytes;
      const uint8_t* vs = ks + C::kTileBytes;
      if (kb < wg_end && kb + kKeys > wg_begin) {     // warpgroup-uniform
        // ---- S = Q K^T
        float s[C::kSRegs];                           // s[4j + e]: row g + 8 (e >> 1), key 8j + 2t + (e & 1)
        wgmma_fence(s, std::make_index_sequence<C::kSRegs>{});
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < C::kKS; ++kk)
          wgmma_rs<typename WgOp<kKeys, Major::K>::Op>(
              s, qf[kk], sw128_descriptor(ks + (kk >> 2) * C::kBlockBytes + (kk & 3) * 32, 16, 1024), kk > 0,
              std::make_index_sequence<C::kSRegs>{});
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
        wgmma_fence(s, std::make_index_sequence<C::kSRegs>{});
        // ---- online softmax (the mma.sync kernel's, per warp: rows g, g + 8)
        const bool unmasked = kb + kKeys <= warp_lim_min && unsigned(warp_end - 1 - kb) <= unsigned(p.window_left);
        float mx[2] = {-INFINITY, -INFINITY};
        if (unmasked) {
#pragma unroll
          for (int i = 0; i < C::kSRegs; ++i) {
            s[i] *= sl2;
            mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
          }
        } else {
#pragma unroll
          for (int i = 0; i < C::kSRegs; ++i) {
            const int key = kb + (i >> 2) * 8 + 2 * t + (i & 1);
            s[i] = key_visible(key, lim[(i >> 1) & 1], p.window_left) ? s[i] * sl2 : -INFINITY;
            mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
          }
        }
        float alpha[2], base[2];
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          base[rr] = quad_max_update(m[rr], l[rr], mx[rr], alpha[rr]);
        }
#pragma unroll
        for (int i = 0; i < C::kSRegs; ++i) {
          s[i] = fast_exp2(s[i] - base[(i >> 1) & 1]);
          l[(i >> 1) & 1] += s[i];
        }
        if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {   // x * 1.0f == x: skip when all 1
#pragma unroll
          for (int i = 0; i < C::kORegs; ++i) o[i] *= alpha[(i >> 1) & 1];
        }
        // ---- O += P V: k-step kk = keys 16kk .. 16kk + 15 = S n8-tiles 2kk, 2kk + 1
        uint32_t pf[C::kPS][4];
#pragma unroll
        for (int kk = 0; kk < C::kPS; ++kk) {
          pf[kk][0] = pack_f16x2(s[8 * kk + 0], s[8 * kk + 1]);
          pf[kk][1] = pack_f16x2(s[8 * kk + 2], s[8 * kk + 3]);
          pf[kk][2] = pack_f16x2(s[8 * kk + 4], s[8 * kk + 5]);
          pf[kk][3] = pack_f16x2(s[8 * kk + 6], s[8 * kk + 7]);
        }
        wgmma_fence(o, std::make_index_sequence<C::kORegs>{});
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < C::kPS; ++kk)
          wgmma_rs<typename WgOp<D, Major::MN>::Op>(o, pf[kk], sw128_descriptor(vs + kk * 2048, C::kBlockBytes, 1024),
                                                    true, std::make_index_sequence<C::kORegs>{});
        cute::warpgroup_commit_batch();
      }
      if (c + 1 < c_end) store(stage ^ 1, kr, vr);    // while the P V wgmmas run; stage ^ 1 was last read in chunk c - 1
      cute::warpgroup_wait<0>();                      // this chunk's P V done before the barrier frees its stage
      wgmma_fence(o, std::make_index_sequence<C::kORegs>{});
      publish();
    }

    // ---- normalize and write rows wrow, wrow + 8
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float lsum = l[rr];
      lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
      lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
      const int row = row0 + wrow + rr * 8;
      if (row >= n_rows) continue;
      prefill_write_row<D>(p, cta, row, t, m[rr], lsum, [&](int j, int e) { return o[4 * j + 2 * rr + e]; });
    }
  }
#endif
}

template <int D, int kKeys>
cudaError_t launch_prefill_wgmma_cfg(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_prefill_kernel(fp8_attention_prefill_wgmma_kernel<D, kKeys>, n_ctas, kWgThreads, CfgW<D, kKeys>::kSmemBytes,
                               p, stream);
}

// p.prefill_wgmma = keys per chunk (the host sets it for sm_90 GPUs only): D 128 takes 64 or 96 (two
// stages of 96 fill 96 KB), D 64 64 or 128.
template <int D>
cudaError_t launch_prefill_wgmma(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  if (p.prefill_wgmma == 64) return launch_prefill_wgmma_cfg<D, 64>(p, n_ctas, stream);
  if constexpr (D == 128) {
    if (p.prefill_wgmma == 96) return launch_prefill_wgmma_cfg<D, 96>(p, n_ctas, stream);
  } else {
    if (p.prefill_wgmma == 128) return launch_prefill_wgmma_cfg<D, 128>(p, n_ctas, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attn
}  // namespace k2k
