// Fused top-k router, one launch: warp-per-token, every score in registers, exact top-k.
//
// Layout: a warp owns one token row at a time (grid-stride over tokens, so the bias is loaded into
// registers once per warp). Lane l holds kPer = kVec * kChunks experts: with kVec = 4 (E % 4 == 0,
// aligned rows) chunk i covers experts (i*32 + l)*4 .. +3 (one 16-byte fp32 / 8-byte bf16 load);
// with kVec = 1 expert i*32 + l. In both layouts a lane's q-th element has a larger expert index than
// its (q-1)-th, which the tie rule below relies on.
//
// Selection works on 32-bit order keys: the float c = s + bias mapped to an unsigned integer with the
// same order (key 0 = not selectable: padding lanes, masked groups). Ties (equal c) go to the lower
// expert index, like the reference's stable sort.
//   1. tau = k-th largest of the 32 lane maxima (k rounds of redux.max over one value per lane).
//      k distinct elements are >= tau, so the top-k set lies inside {key >= tau}.
//   2. Usually <= 32 elements pass (on random rows about k..2k are expected): they are compacted into
//      shared memory and each lane ranks one candidate against the others (exact, tie -> lower index).
//   3. Otherwise (e.g. all-equal logits) k rounds of warp argmax over the registers.
// That avoids k full rescans of every lane's registers (k * E / 32 compare-selects per lane), which
// by instruction count would dominate the kernel at E = 384, k = 8 and T = 16384.
//
// Non-finite inputs (reference/router.py is the spec): logits and bias are clamped to
// [-FLT_MAX, FLT_MAX] with NaN -> -FLT_MAX, so every c is finite and no NaN reaches the sort.
#include "routing/topk_router.h"

#include <cuda_bf16.h>

#include <cfloat>
#include <climits>

#include "common/smem_budget.h"
#include "routing/router_math.cuh"

namespace k2k {
namespace {

using router::kFull;
using router::load1;
using router::order_key;
using router::sanitize;
using router::warp_max;
using router::warp_sum;

constexpr int kWarps = 4;                 // tokens per block (one per warp)
constexpr int kThreads = kWarps * 32;
constexpr int kMaxExperts = 1024;


// Grouped top-k (n_group > 1) stages per warp: c [E] fp32, group keys [n_group] u32, keep flags [n_group] u8.
constexpr int kGroupSmemMax = kWarps * (kMaxExperts * 4 + kMaxExperts * 4 + kMaxExperts);
K2K_SMEM_BUDGET(topk_router, kGroupSmemMax + 12 * 32 * kWarps);   // + candidates (key, idx, s)

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  const uint2 r = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&r.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&r.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
template <int kVec>
__device__ __forceinline__ int expert_of(int q, int lane) {
  return kVec == 1 ? q * 32 + lane : ((q / kVec) * 32 + lane) * kVec + (q % kVec);
}

template <typename T, int kVec, int kChunks>
__global__ void __launch_bounds__(kThreads)
topk_router_kernel(const T* __restrict__ logits, const float* __restrict__ bias, float* __restrict__ weights,
                   int32_t* __restrict__ ids, int64_t num_tokens, int E, int top_k, int n_group, int topk_group,
                   bool softmax, bool renormalize, float scale) {
  constexpr int kPer = kVec * kChunks;
  // Candidates: (key, expert) packed for the rank loop's one 8-byte load; the score s apart (read once).
  __shared__ uint2 cand_all[kWarps][32];
  __shared__ float cand_s_all[kWarps][32];
  extern __shared__ __align__(16) unsigned char group_smem[];

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint2* cand = cand_all[warp];
  float* cand_s = cand_s_all[warp];

  float b[kPer];
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int e = expert_of<kVec>(q, lane);
    b[q] = (bias != nullptr && e < E) ? sanitize(bias[e]) : 0.f;
  }

  float* gc = reinterpret_cast<float*>(group_smem) + warp * E;
  uint32_t* gkey = reinterpret_cast<uint32_t*>(group_smem + kWarps * E * 4) + warp * n_group;
  unsigned char* keep = group_smem + kWarps * (E * 4 + n_group * 4) + warp * n_group;

  for (int64_t t = int64_t(blockIdx.x) * kWarps + warp; t < num_tokens; t += int64_t(gridDim.x) * kWarps) {
    const T* row = logits + t * E;
    float s[kPer];
    if constexpr (kVec == 4) {
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        const int e0 = (i * 32 + lane) * 4;
        float4 v = make_float4(-FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX);
        if (e0 < E) v = load4(row + e0);           // E % 4 == 0 on this path: whole chunk in or out
        s[i * 4 + 0] = v.x;
        s[i * 4 + 1] = v.y;
        s[i * 4 + 2] = v.z;
        s[i * 4 + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const int e = expert_of<kVec>(q, lane);
        s[q] = e < E ? load1(row + e) : -FLT_MAX;
      }
    }

    // ---- scores s (unbiased; the returned weights) ----
    if (softmax) {
      float m = -FLT_MAX;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        s[q] = sanitize(s[q]);
        m = fmaxf(m, s[q]);
      }
      m = warp_max(m);
      float sum = 0.f;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const float ev = expert_of<kVec>(q, lane) < E ? __expf(s[q] - m) : 0.f;
        s[q] = ev;
        sum += ev;
      }
      const float inv = 1.f / warp_sum(sum);     // >= 1: the row maximum contributes exp(0)
#pragma unroll
      for (int q = 0; q < kPer; ++q) s[q] *= inv;
    } else {
#pragma unroll
      for (int q = 0; q < kPer; ++q) s[q] = router::sigmoid(s[q]);
    }

    uint32_t key[kPer];
#pragma unroll
    for (int q = 0; q < kPer; ++q) key[q] = expert_of<kVec>(q, lane) < E ? order_key(s[q] + b[q]) : 0u;

    // ---- grouped top-k: keep the best topk_group groups (n_group == 1 for Kimi: skipped) ----
    if (n_group > 1) {
      __syncwarp();                                 // the previous token's readers are done
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const int e = expert_of<kVec>(q, lane);
        if (e < E) gc[e] = s[q] + b[q];
      }
      for (int g = lane; g < n_group; g += 32) keep[g] = 0;
      __syncwarp();
      const int gs = E / n_group;
      for (int g = lane; g < n_group; g += 32) {   // lane g % 32 owns group g's key from here on
        const float* c = gc + g * gs;
        float v;
        if (bias != nullptr && gs >= 2) {          // sum of the top-2 biased scores
          float m1 = -INFINITY, m2 = -INFINITY;
          for (int i = 0; i < gs; ++i) {
            const float x = c[i];
            if (x > m1) {
              m2 = m1;
              m1 = x;
            } else if (x > m2) {
              m2 = x;
            }
          }
          v = m1 + m2;
        } else {                                   // max score (without bias c == s)
          v = c[0];
          for (int i = 1; i < gs; ++i) v = fmaxf(v, c[i]);
        }
        gkey[g] = order_key(v);                    // sums may overflow to +-inf, never NaN: keys > 0
      }
      for (int r = 0; r < topk_group; ++r) {
        uint32_t bk = 0;
        int bg = INT_MAX;
        for (int g = lane; g < n_group; g += 32) {
          const uint32_t k = gkey[g];
          if (k > bk) {
            bk = k;
            bg = g;
          }
        }
        const uint32_t w = __reduce_max_sync(kFull, bk);
        const uint32_t wg = __reduce_min_sync(kFull, bk == w ? uint32_t(bg) : 0xffffffffu);
        if (bk == w && uint32_t(bg) == wg) {
          gkey[bg] = 0;
          keep[bg] = 1;
        }
      }
      __syncwarp();
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const int e = expert_of<kVec>(q, lane);
        if (e < E && !keep[e / gs]) key[q] = 0;
      }
    }

    // ---- 1. tau: the top_k-th largest lane maximum ----
    uint32_t cur = 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) cur = max(cur, key[q]);
    uint32_t tau = 0;
    for (int r = 0; r < top_k; ++r) {
      const uint32_t w = __reduce_max_sync(kFull, cur);
      const unsigned ball = __ballot_sync(kFull, cur == w);
      if (lane == __ffs(ball) - 1) cur = 0;
      tau = w;
    }
    tau = max(tau, 1u);                             // fewer than top_k lanes hold experts: take all

    int n = 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) n += key[q] >= tau ? 1 : 0;
    int incl = n;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int y = __shfl_up_sync(kFull, incl, d);
      if (lane >= d) incl += y;
    }
    const int total = __shfl_sync(kFull, incl, 31);

    bool selected = false;
    int rank = 0, sel_idx = 0;
    float sel_s = 0.f;
    if (total <= 32) {
      // ---- 2. rank the candidates ----
      int pos = incl - n;
      __syncwarp();                                 // the previous token's readers of cand are done
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        if (key[q] >= tau) {
          cand[pos] = make_uint2(key[q], uint32_t(expert_of<kVec>(q, lane)));
          cand_s[pos] = s[q];
          ++pos;
        }
      }
      __syncwarp();
      if (lane < total) {
        const uint2 me = cand[lane];
        int r = 0;
        for (int j = 0; j < total; ++j) {
          const uint2 o = cand[j];
          r += (o.x > me.x || (o.x == me.x && o.y < me.y)) ? 1 : 0;
        }
        if (r < top_k) {
          selected = true;
          rank = r;
          sel_idx = int(me.y);
          sel_s = cand_s[lane];
        }
      }
    } else {
      // ---- 3. many candidates (ties): top_k rounds of warp argmax ----
      for (int r = 0; r < top_k; ++r) {
        uint32_t bk = 0;
        int bq = -1;
        float bs = 0.f;
#pragma unroll
        for (int q = 0; q < kPer; ++q) {
          if (key[q] > bk) {                        // strict: the lowest expert among equal keys
            bk = key[q];
            bq = q;
            bs = s[q];
          }
        }
        const uint32_t be = bq >= 0 ? uint32_t(expert_of<kVec>(bq, lane)) : 0xffffffffu;
        const uint32_t w = __reduce_max_sync(kFull, bk);
        const uint32_t we = __reduce_min_sync(kFull, bk == w ? be : 0xffffffffu);
        const bool win = bk == w && be == we;
        const int src = __ffs(__ballot_sync(kFull, win)) - 1;
        const float ws = __shfl_sync(kFull, bs, src);
        if (win) {
#pragma unroll
          for (int q = 0; q < kPer; ++q) key[q] = q == bq ? 0u : key[q];
        }
        if (lane == r) {
          selected = true;
          rank = r;
          sel_idx = w != 0 ? int(we) : 0;           // w == 0 cannot happen (top_k <= kept experts)
          sel_s = ws;
        }
      }
    }

    float wv = selected ? sel_s : 0.f;
    if (renormalize) wv = wv / fmaxf(warp_sum(wv), 1e-20f);
    wv *= scale;
    if (selected) {
      weights[t * top_k + rank] = wv;
      ids[t * top_k + rank] = sel_idx;
    }
  }
}

template <typename T, int kVec, int kChunks>
void launch_typed(const TopkRouterParams& p, int grid, int smem, cudaStream_t stream) {
  topk_router_kernel<T, kVec, kChunks><<<grid, kThreads, smem, stream>>>(
      static_cast<const T*>(p.logits), p.bias, p.weights, p.ids, p.T, p.E, p.top_k, p.n_group, p.topk_group,
      p.softmax, p.renormalize, p.scale);
}

template <typename T>
void dispatch(const TopkRouterParams& p, bool vec4, int grid, int smem, cudaStream_t stream) {
  if (vec4) {                                       // experts per lane = 4 * chunks
    const int chunks = (p.E + 127) / 128;
    if (chunks <= 1) return launch_typed<T, 4, 1>(p, grid, smem, stream);
    if (chunks <= 2) return launch_typed<T, 4, 2>(p, grid, smem, stream);
    if (chunks <= 3) return launch_typed<T, 4, 3>(p, grid, smem, stream);   // E = 384 (Kimi)
    if (chunks <= 4) return launch_typed<T, 4, 4>(p, grid, smem, stream);
    if (chunks <= 6) return launch_typed<T, 4, 6>(p, grid, smem, stream);
    return launch_typed<T, 4, 8>(p, grid, smem, stream);
  }
  const int per = (p.E + 31) / 32;
  if (per <= 1) return launch_typed<T, 1, 1>(p, grid, smem, stream);
  if (per <= 2) return launch_typed<T, 1, 2>(p, grid, smem, stream);
  if (per <= 4) return launch_typed<T, 1, 4>(p, grid, smem, stream);
  if (per <= 8) return launch_typed<T, 1, 8>(p, grid, smem, stream);
  if (per <= 16) return launch_typed<T, 1, 16>(p, grid, smem, stream);
  return launch_typed<T, 1, 32>(p, grid, smem, stream);
}

}  // namespace

int topk_router_smem_bytes(const TopkRouterParams& p) {
  return p.n_group > 1 ? kWarps * (p.E * 4 + p.n_group * 4 + p.n_group) : 0;
}

void launch_topk_router(const TopkRouterParams& p, int device, cudaStream_t stream) {
  if (p.T == 0) return;                             // no zero-sized grid
  if (p.kernel != kRouterWarp && launch_topk_router_block(p, stream)) return;   // decode: block per token
  // The kernel loops over tokens; 16 blocks of 4 warps per SM is full occupancy at <= 32 registers
  // per thread and more than enough warps in flight above that. The SM count is cached per device
  // (cudaDeviceGetAttribute is cheap, but this is on the decode path).
  static int sm_count[64] = {};
  int& sms = sm_count[device & 63];
  if (sms == 0) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int max_blocks = (sms > 0 ? sms : 1) * 16;
  const int64_t blocks = (p.T + kWarps - 1) / kWarps;
  const int grid = static_cast<int>(blocks < max_blocks ? blocks : (max_blocks > 0 ? max_blocks : 1));
  const int smem = topk_router_smem_bytes(p);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p.logits);
  // Rows stay aligned when E % 4 == 0: 16 B (fp32) / 8 B (bf16) per 4 experts.
  const bool vec4 = p.E % 4 == 0 && addr % (p.logits_bf16 ? 8 : 16) == 0;
  if (p.logits_bf16) {
    dispatch<__nv_bfloat16>(p, vec4, grid, smem, stream);
  } else {
    dispatch<float>(p, vec4, grid, smem, stream);
  }
}

}  // namespace k2k
