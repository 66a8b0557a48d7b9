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
//   1. tau = (about) the k-th largest of the 32 lane maxima (k rounds of redux.max over one value per
//      lane, lane ids in the low bits so one lane leaves per round). k distinct elements are >= tau, so
//      the top-k set lies inside {key >= tau}.
//   2. Usually <= 32 elements pass (on random rows about k..2k are expected): each lane marks its
//      candidates in a bit mask, stores its keys to shared memory by expert, and appends its candidates
//      (key << 32 | ~expert) to a per-warp list at its prefix-sum position, one per round of a bit loop;
//      then each lane ranks one candidate against the others with 64-bit compares (exact, tie -> lower
//      index).
//   3. Otherwise (e.g. all-equal logits) k rounds of warp argmax over the registers.
//   4. The selected lanes recompute their score from the logit and write the outputs.
// That avoids k full rescans of every lane's registers (k * E / 32 compare-selects per lane), which
// by instruction count would dominate the kernel at E = 384, k = 8 and T = 16384.
//
// Large T is issue-bound, not bandwidth-bound (Nsight Compute at T = 16384, twelfth session: 787 warp
// instructions per token before steps 1, 2 and 4 took their present form, 574 after, ~485 (SASS estimate)
// since step 2's bit loop), so the kernel counts
// instructions: no bounds checks when E fills the lanes exactly (kTail = false, E = 384), the next
// token's logits loaded while the current one is ranked, and one wave of resident blocks.
//
// Non-finite inputs (reference/router.py is the spec): logits and bias are clamped to
// [-FLT_MAX, FLT_MAX] with NaN -> -FLT_MAX, so every c is finite and no NaN reaches the sort.
#include "routing/topk_router.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
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
K2K_SMEM_BUDGET(topk_router, kGroupSmemMax + 8 * 32 * kWarps);   // + candidates

// The logits of one token as one lane loads them: raw words, converted to float only when used, so the
// next token's loads can be in flight while this token is scored and ranked. kVec = 4: kChunks words of
// 4 experts (float4 for fp32, 4 packed bf16 for bf16); kVec = 1: one expert per word.
template <typename T, int kVec>
struct RowWord {
  using type = T;
};
template <>
struct RowWord<float, 4> {
  using type = float4;
};
template <>
struct RowWord<__nv_bfloat16, 4> {
  using type = uint2;
};

__device__ __forceinline__ void fill_lowest(float& w) { w = -FLT_MAX; }
__device__ __forceinline__ void fill_lowest(__nv_bfloat16& w) { w = __ushort_as_bfloat16(0xFF80u); }  // -inf
__device__ __forceinline__ void fill_lowest(float4& w) { w = make_float4(-FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX); }
__device__ __forceinline__ void fill_lowest(uint2& w) { w = make_uint2(0xFF80FF80u, 0xFF80FF80u); }

__device__ __forceinline__ float element(float w, int) { return w; }
__device__ __forceinline__ float element(__nv_bfloat16 w, int) { return __bfloat162float(w); }
__device__ __forceinline__ float element(const float4& w, int j) { return j == 0 ? w.x : j == 1 ? w.y : j == 2 ? w.z : w.w; }
__device__ __forceinline__ float element(const uint2& w, int j) {
  const uint32_t u = j < 2 ? w.x : w.y;
  return __uint_as_float(j % 2 == 0 ? u << 16 : u & 0xFFFF0000u);   // bf16 -> fp32 is a shift
}

template <typename T, int kVec, int kChunks, bool kTail>
struct RowRegs {
  using Word = typename RowWord<T, kVec>::type;
  Word w[kChunks];
  __device__ __forceinline__ void load(const T* row, int lane, int E) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int e0 = (i * 32 + lane) * kVec;       // E % kVec == 0 when kVec = 4: a word is wholly in or out
      if (!kTail || e0 < E) {
        w[i] = *reinterpret_cast<const Word*>(row + e0);
      } else {
        fill_lowest(w[i]);
      }
    }
  }
  __device__ __forceinline__ float get(int q) const { return element(w[q / kVec], q % kVec); }
};

template <int kVec>
__device__ __forceinline__ int expert_of(int q, int lane) {
  return kVec == 1 ? q * 32 + lane : ((q / kVec) * 32 + lane) * kVec + (q % kVec);
}

// kTail = false: E == 32 * kVec * kChunks (instantiated for E = 384 only: kVec = 4, kChunks = 3): every lane's experts
// exist, no bounds checks. Up to 12 experts per lane: <= 64 registers, 8 blocks (32 warps) per SM; more
// are left to the compiler (capping them at 64 spilled).
template <typename T, int kVec, int kChunks, bool kTail>
__global__ void __launch_bounds__(kThreads, kVec * kChunks <= 12 ? 8 : 1)
topk_router_kernel(const T* __restrict__ logits, const float* __restrict__ bias, float* __restrict__ weights,
                   int32_t* __restrict__ ids, int64_t num_tokens, int E, int top_k, int n_group, int topk_group,
                   bool softmax, bool renormalize, float scale) {
  constexpr int kPer = kVec * kChunks;
  // Candidates (key << 32 | ~expert) for the rank loop's 8-byte loads.
  __shared__ unsigned long long cand_all[kWarps][32];
  extern __shared__ __align__(16) unsigned char group_smem[];

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  unsigned long long* cand = cand_all[warp];
  auto exists = [&](int q) { return !kTail || expert_of<kVec>(q, lane) < E; };

  float b[kPer];
#pragma unroll
  for (int q = 0; q < kPer; ++q) b[q] = (bias != nullptr && exists(q)) ? sanitize(bias[expert_of<kVec>(q, lane)]) : 0.f;

  float* gc = reinterpret_cast<float*>(group_smem) + warp * E;
  // every key of the token by expert, for step 2 (reuses gc: the group scores are read by then)
  uint32_t* lane_keys = reinterpret_cast<uint32_t*>(group_smem) + warp * E;
  uint32_t* gkey = reinterpret_cast<uint32_t*>(group_smem + kWarps * E * 4) + warp * n_group;
  unsigned char* keep = group_smem + kWarps * (E * 4 + n_group * 4) + warp * n_group;

  const int64_t stride = int64_t(gridDim.x) * kWarps;
  int64_t t = int64_t(blockIdx.x) * kWarps + warp;
  RowRegs<T, kVec, kChunks, kTail> next;
  if (t < num_tokens) next.load(logits + t * E, lane, E);
  for (; t < num_tokens; t += stride) {
    const T* row = logits + t * E;
    const RowRegs<T, kVec, kChunks, kTail> x = next;
    if (t + stride < num_tokens) next.load(row + stride * E, lane, E);   // in flight while this token runs

    // ---- scores s (unbiased; the returned weights) ----
    float s[kPer];
    float m = 0.f, inv = 0.f;                      // softmax: row maximum and 1 / sum (kept for step 4)
    if (softmax) {
      m = -FLT_MAX;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        s[q] = sanitize(x.get(q));
        m = fmaxf(m, s[q]);
      }
      m = warp_max(m);
      float sum = 0.f;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const float ev = exists(q) ? __expf(s[q] - m) : 0.f;
        s[q] = ev;
        sum += ev;
      }
      inv = 1.f / warp_sum(sum);                   // >= 1: the row maximum contributes exp(0)
#pragma unroll
      for (int q = 0; q < kPer; ++q) s[q] *= inv;
    } else {
#pragma unroll
      for (int q = 0; q < kPer; ++q) s[q] = router::sigmoid(x.get(q));
    }

    uint32_t key[kPer];
#pragma unroll
    for (int q = 0; q < kPer; ++q) key[q] = exists(q) ? order_key(s[q] + b[q]) : 0u;

    // ---- grouped top-k: keep the best topk_group groups (n_group == 1 for Kimi: skipped) ----
    if (n_group > 1) {
      __syncwarp();                                 // the previous token's readers are done
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const int e = expert_of<kVec>(q, lane);
        if (exists(q)) gc[e] = s[q] + b[q];
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
            const float xv = c[i];
            if (xv > m1) {
              m2 = m1;
              m1 = xv;
            } else if (xv > m2) {
              m2 = xv;
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
      __syncwarp();                                 // keep[] is final; the group owners' reads of gc are
                                                    // done before step 2 stores the keys over it
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const int e = expert_of<kVec>(q, lane);
        if (exists(q) && !keep[e / gs]) key[q] = 0;
      }
    }

    // ---- 1. tau: (about) the top_k-th largest lane maximum ----
    // The lane id replaces a lane maximum's low 5 bits, so every lane's value is distinct and each round
    // takes exactly one lane out with one redux.max (no ballot for the lowest lane). tau = the top_k-th
    // value with those bits cleared: the top_k lanes taken all hold an element whose key is >= tau, so
    // the top-k set still lies inside {key >= tau}; elements within 31 key units (ulps) below the exact
    // top_k-th lane maximum become candidates too, which the exact ranking below sorts out.
    uint32_t cur = 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) cur = max(cur, key[q]);
    cur = cur != 0u ? (cur & ~31u) | uint32_t(lane) : 0u;   // finite c: key >= 0x00800000, never 0 here
    uint32_t w = 0;
    for (int r = 0; r < top_k; ++r) {
      w = __reduce_max_sync(kFull, cur);
      if (cur == w) cur = 0;
    }
    const uint32_t tau = max(w & ~31u, 1u);        // fewer than top_k lanes hold experts: take all

    uint32_t mask = 0;                              // bit q: key[q] is a candidate
#pragma unroll
    for (int q = 0; q < kPer; ++q) mask |= key[q] >= tau ? 1u << q : 0u;
    const int n = __popc(mask);
    int incl = n;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int y = __shfl_up_sync(kFull, incl, d);
      if (lane >= d) incl += y;
    }
    const int total = __shfl_sync(kFull, incl, 31);

    bool selected = false;
    int rank = 0, sel_idx = 0;
    if (total <= 32) {
      // ---- 2. rank the candidates ----
      // This lane's keys go to shared memory by expert (kVec = 4: one 16-byte store per 4 experts) so that its
      // candidates, usually 0-2 of its kPer, can be read back by expert index; a candidate enters the
      // list as key << 32 | ~expert: one 64-bit compare orders by key, then by the lower expert.
      int pos = incl - n;
      if constexpr (kVec == 4) {
#pragma unroll
        for (int i = 0; i < kChunks; ++i) {
          const int e0 = (i * 32 + lane) * 4;
          if (!kTail || e0 < E)
            *reinterpret_cast<uint4*>(lane_keys + e0) = make_uint4(key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]);
        }
      } else {
#pragma unroll
        for (int q = 0; q < kPer; ++q)
          if (exists(q)) lane_keys[expert_of<kVec>(q, lane)] = key[q];
      }
      __syncwarp();                                 // the previous token's readers of cand are done
      while (mask != 0) {                           // as many rounds as the busiest lane has candidates
        const int q = __ffs(mask) - 1;
        mask &= mask - 1;
        const int e = kVec == 1 ? q * 32 + lane : (q >> 2) * 128 + lane * 4 + (q & 3);   // expert_of, q >= 0
        cand[pos++] = (static_cast<unsigned long long>(lane_keys[e]) << 32) | ~uint32_t(e);
      }
      __syncwarp();
      if (lane < total) {
        const unsigned long long me = cand[lane];
        int r = 0;
        for (int j = 0; j < total; ++j) r += cand[j] > me ? 1 : 0;
        if (r < top_k) {
          selected = true;
          rank = r;
          sel_idx = int(~uint32_t(me));
        }
      }
    } else {
      // ---- 3. many candidates (ties): top_k rounds of warp argmax ----
      for (int r = 0; r < top_k; ++r) {
        uint32_t bk = 0;
        int bq = -1;
#pragma unroll
        for (int q = 0; q < kPer; ++q) {
          if (key[q] > bk) {                        // strict: the lowest expert among equal keys
            bk = key[q];
            bq = q;
          }
        }
        const uint32_t be = bq >= 0 ? uint32_t(expert_of<kVec>(bq, lane)) : 0xffffffffu;
        const uint32_t wk = __reduce_max_sync(kFull, bk);
        const uint32_t we = __reduce_min_sync(kFull, bk == wk ? be : 0xffffffffu);
        if (bk == wk && be == we) {
#pragma unroll
          for (int q = 0; q < kPer; ++q) key[q] = q == bq ? 0u : key[q];
        }
        if (lane == r) {
          selected = true;
          rank = r;
          sel_idx = wk != 0 ? int(we) : 0;          // wk == 0 cannot happen (top_k <= kept experts)
        }
      }
    }

    // ---- 4. the selected scores: recomputed from the logit (L1-resident) with the same instructions
    // as s above, so bit-identical; keeping s per candidate would cost a store per element ----
    float wv = 0.f;
    if (selected) {
      const float xs = router::load1(row + sel_idx);
      wv = softmax ? __expf(sanitize(xs) - m) * inv : router::sigmoid(xs);
    }
    if (renormalize) {
      const float sum = warp_sum(wv);
      if (selected) wv = wv / fmaxf(sum, 1e-20f);  // selected lanes only: 0 / x would take the slow path
    }
    if (selected) {
      weights[t * top_k + rank] = wv * scale;
      ids[t * top_k + rank] = sel_idx;
    }
  }
}

template <typename T, int kVec, int kChunks, bool kTail>
void launch_typed(const TopkRouterParams& p, int device, int64_t blocks, int smem, cudaStream_t stream) {
  auto kernel = topk_router_kernel<T, kVec, kChunks, kTail>;
  // The grid is sized for the instantiation's largest key area (every E it serves with n_group == 1), so
  // callers alternating E within one instantiation keep hitting the cache; grouped calls use their own.
  const int fit_smem = p.n_group > 1 ? smem : kWarps * 32 * kVec * kChunks * 4;
  // The kernel loops over tokens with the next row's loads in flight: one wave of resident blocks is
  // enough. Resident blocks for this instantiation and shared memory size, cached per device as one
  // atomic (smem << 32 | blocks), so concurrent callers never read half an entry (the decode path may
  // come here for n_group > 1).
  static std::atomic<int64_t> fit[64];
  std::atomic<int64_t>& cached = fit[device & 63];
  int64_t entry = cached.load(std::memory_order_relaxed);
  if (entry == 0 || (entry >> 32) != fit_smem) {
    int sms = 0, per_sm = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, fit_smem) != cudaSuccess) {
      (void)cudaGetLastError();                     // not this launch's error: fall back, do not cache;
      sms = 132;                                    // any grid is correct (the kernel strides over tokens)
      per_sm = 8;
    } else {
      cached.store((int64_t(fit_smem) << 32) | (std::max(sms, 1) * std::max(per_sm, 1)), std::memory_order_relaxed);
    }
    entry = (int64_t(fit_smem) << 32) | (std::max(sms, 1) * std::max(per_sm, 1));
  }
  const int grid = static_cast<int>(std::min<int64_t>(blocks, entry & 0xffffffff));
  kernel<<<grid, kThreads, smem, stream>>>(static_cast<const T*>(p.logits), p.bias, p.weights, p.ids, p.T, p.E,
                                           p.top_k, p.n_group, p.topk_group, p.softmax, p.renormalize, p.scale);
}

template <typename T>
void dispatch(const TopkRouterParams& p, bool vec4, int device, int64_t blocks, int smem, cudaStream_t stream) {
  if (vec4) {                                       // experts per lane = 4 * chunks
    const int chunks = (p.E + 127) / 128;
    const bool tail = p.E != chunks * 128;
    if (chunks <= 1) return launch_typed<T, 4, 1, true>(p, device, blocks, smem, stream);
    if (chunks <= 2) return launch_typed<T, 4, 2, true>(p, device, blocks, smem, stream);
    if (chunks <= 3 && !tail) return launch_typed<T, 4, 3, false>(p, device, blocks, smem, stream);   // E = 384 (Kimi)
    if (chunks <= 3) return launch_typed<T, 4, 3, true>(p, device, blocks, smem, stream);
    if (chunks <= 4) return launch_typed<T, 4, 4, true>(p, device, blocks, smem, stream);
    if (chunks <= 6) return launch_typed<T, 4, 6, true>(p, device, blocks, smem, stream);
    return launch_typed<T, 4, 8, true>(p, device, blocks, smem, stream);
  }
  const int per = (p.E + 31) / 32;
  if (per <= 1) return launch_typed<T, 1, 1, true>(p, device, blocks, smem, stream);
  if (per <= 2) return launch_typed<T, 1, 2, true>(p, device, blocks, smem, stream);
  if (per <= 4) return launch_typed<T, 1, 4, true>(p, device, blocks, smem, stream);
  if (per <= 8) return launch_typed<T, 1, 8, true>(p, device, blocks, smem, stream);
  if (per <= 16) return launch_typed<T, 1, 16, true>(p, device, blocks, smem, stream);
  return launch_typed<T, 1, 32, true>(p, device, blocks, smem, stream);
}

}  // namespace

int topk_router_smem_bytes(const TopkRouterParams& p) {
  // the keys by expert (and, grouped, the scores in the same place plus the group keys and flags)
  return p.n_group > 1 ? kWarps * (p.E * 4 + p.n_group * 4 + p.n_group) : kWarps * p.E * 4;
}

void launch_topk_router(const TopkRouterParams& p, int device, cudaStream_t stream) {
  if (p.T == 0) return;                             // no zero-sized grid
  if (p.kernel != kRouterWarp && launch_topk_router_block(p, stream)) return;   // decode: block per token
  const int64_t blocks = (p.T + kWarps - 1) / kWarps;
  const int smem = topk_router_smem_bytes(p);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p.logits);
  // Rows stay aligned when E % 4 == 0: 16 B (fp32) / 8 B (bf16) per 4 experts.
  const bool vec4 = p.E % 4 == 0 && addr % (p.logits_bf16 ? 8 : 16) == 0;
  if (p.logits_bf16) {
    dispatch<__nv_bfloat16>(p, vec4, device, blocks, smem, stream);
  } else {
    dispatch<float>(p, vec4, device, blocks, smem, stream);
  }
}

}  // namespace k2k
