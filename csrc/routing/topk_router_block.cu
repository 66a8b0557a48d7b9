// Top-k router, latency path: one 128-thread block per token (decode: T <= kBlockPathMaxT, n_group == 1).
//
// Why: the warp-per-token kernel (topk_router.cu) runs a token as ONE warp's dependent chain (~1100
// instructions at E = 384, k = 8; 3.45 us per call on the H200 against a 1.17 us one-kernel floor).
// Here four warps share the token, each lane holding ceil(E / 128) experts, and the selection chain is
// short:
//   1. tau_w = the r-th largest lane maximum of warp w, r = ceil(k / 4) (r rounds of redux.max);
//      tau = min over the 4 warps. Each warp has r distinct lanes whose maximum is >= tau, so at least
//      4 r >= k distinct experts have key >= tau: the top-k set lies inside {key >= tau}.
//   2. Each warp compacts its experts with key >= tau (typically k..2k in all, at most kSlots per warp)
//      into its column of a shared table with ballots: positions are deterministic, no atomics. After
//      one barrier warp 0 alone ranks them exactly (lane l owns table slots l and l + 32; ties go to the
//      lower expert index, like the reference's stable sort), sums the selected scores in rank order and
//      writes the outputs; the other warps are done.
//   3. A warp with more than kSlots candidates (e.g. many equal logits): k rounds of block-wide argmax.
// Scores, keys and non-finite handling are the warp kernel's (router_math.cuh), so both paths pick the
// same experts.
//
// History (H200, benchmarks/RESULTS.md): the first version appended candidates to one list with shared
// atomics (three dependent atomic round trips per thread at E = 384) and wrote the ranked outputs
// through a third barrier and a shuffle-tree sum: 2.53 us (T = 1) .. 2.90 us (T = 64) warm per call.
#include <cuda_bf16.h>

#include <cfloat>

#include "common/pdl.cuh"
#include "routing/router_math.cuh"
#include "routing/topk_router.h"

namespace k2k {
namespace {

using router::kFull;
using router::order_key;
using router::sanitize;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kSlots = 16;                         // candidates one warp may hand to the ranking
constexpr int kMaxTopK = 16;
constexpr int kMaxRounds = kMaxTopK / kWarps;

// Candidate a outranks candidate b: larger key, or equal key and lower expert (b.x > 0: a real one).
__device__ __forceinline__ int outranks(uint2 a, uint2 b) { return (a.x > b.x || (a.x == b.x && a.y < b.y)) ? 1 : 0; }

template <typename T, int kPer>
__global__ void __launch_bounds__(kThreads)
topk_router_block_kernel(const T* __restrict__ logits, const float* __restrict__ bias, float* __restrict__ weights,
                         int32_t* __restrict__ ids, int E, int top_k, bool softmax, bool renormalize, float scale) {
  __shared__ uint32_t warp_key[kWarps], warp_idx[kWarps];
  __shared__ float warp_val[kWarps];
  __shared__ __align__(16) int warp_count[kWarps];
  __shared__ uint2 cand[kSlots][kWarps];           // (key, expert); column w = warp w's candidates in order
  __shared__ float cand_s[kSlots][kWarps];
  __shared__ __align__(16) float sel_s[kMaxTopK];  // selected scores by rank
  __shared__ int sel_id[kMaxTopK];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t t = blockIdx.x;
  const T* row = logits + t * E;
  // Launched with PDL (launch_typed): the block may start while the stream's previous kernel still runs
  // (e.g. the previous router call of a decode graph), so it waits before reading anything that kernel
  // may write (the logits, the bias) or writing what it may read; the next kernel may launch now.
  pdl_launch_dependents();
  pdl_wait();

  float s[kPer], b[kPer];                          // all loads first: one memory latency
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int e = tid + kThreads * q;
    s[q] = e < E ? router::load1(row + e) : -FLT_MAX;
    b[q] = (bias != nullptr && e < E) ? sanitize(bias[e]) : 0.f;
  }

  if (softmax) {
    float m = -FLT_MAX;
#pragma unroll
    for (int q = 0; q < kPer; ++q) m = fmaxf(m, s[q] = sanitize(s[q]));
    m = router::warp_max(m);
    if (lane == 0) warp_val[warp] = m;
    __syncthreads();
    m = fmaxf(fmaxf(warp_val[0], warp_val[1]), fmaxf(warp_val[2], warp_val[3]));
    float sum = 0.f;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      s[q] = tid + kThreads * q < E ? __expf(s[q] - m) : 0.f;
      sum += s[q];
    }
    sum = router::warp_sum(sum);
    __syncthreads();                               // everyone has read the maxima
    if (lane == 0) warp_val[warp] = sum;
    __syncthreads();
    const float inv = 1.f / (warp_val[0] + warp_val[1] + warp_val[2] + warp_val[3]);   // >= 1 term exp(0)
#pragma unroll
    for (int q = 0; q < kPer; ++q) s[q] *= inv;
  } else {
#pragma unroll
    for (int q = 0; q < kPer; ++q) s[q] = router::sigmoid(s[q]);
  }
  uint32_t key[kPer];
#pragma unroll
  for (int q = 0; q < kPer; ++q) key[q] = tid + kThreads * q < E ? order_key(s[q] + b[q]) : 0u;

  // ---- 1. tau ----
  uint32_t cur = 0;
#pragma unroll
  for (int q = 0; q < kPer; ++q) cur = max(cur, key[q]);
  uint32_t tau_w = 0;
  const int rounds = (top_k + kWarps - 1) / kWarps;
#pragma unroll
  for (int r = 0; r < kMaxRounds; ++r) {
    if (r < rounds) {
      const uint32_t w = __reduce_max_sync(kFull, cur);
      if (lane == __ffs(__ballot_sync(kFull, cur == w)) - 1) cur = 0;
      tau_w = w;
    }
  }
  if (lane == 0) warp_key[warp] = tau_w;
  __syncthreads();
  // a warp without r lanes holding experts (small E) gives 0: then every expert is a candidate
  const uint32_t tau = max(min(min(warp_key[0], warp_key[1]), min(warp_key[2], warp_key[3])), 1u);

  // ---- 2. candidates: ballot compaction into this warp's column, then warp 0 ranks ----
  const uint32_t below = (1u << lane) - 1u;
  int count = 0;
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const bool mine = key[q] >= tau;
    const uint32_t m = __ballot_sync(kFull, mine);
    const int pos = count + __popc(m & below);
    if (mine && pos < kSlots) {
      cand[pos][warp] = make_uint2(key[q], uint32_t(tid + kThreads * q));
      cand_s[pos][warp] = s[q];
    }
    count += __popc(m);
  }
  if (lane >= count && lane < kSlots) cand[lane][warp].x = 0u;   // padding never outranks a candidate
  if (lane == 0) warp_count[warp] = count;
  __syncthreads();
  const int4 c4 = *reinterpret_cast<const int4*>(warp_count);
  const int rows = max(max(c4.x, c4.y), max(c4.z, c4.w));
  if (rows <= kSlots) {
    if (warp != 0) return;
    // lane owns slots (row l / 4, column l % 4) and (row 8 + l / 4, same column); key 0 = empty
    const uint2 me0 = cand[lane >> 2][lane & 3];
    const uint2 me1 = rows > 8 ? cand[8 + (lane >> 2)][lane & 3] : make_uint2(0u, 0u);
    const bool has0 = (lane >> 2) < rows && me0.x != 0u, has1 = 8 + (lane >> 2) < rows && me1.x != 0u;
    auto rank_of = [&](uint2 me) {                 // one count per column: four short add chains
      int r[kWarps] = {};
      for (int j = 0; j < rows; ++j) {
#pragma unroll
        for (int w = 0; w < kWarps; ++w) r[w] += outranks(cand[j][w], me);
      }
      return (r[0] + r[1]) + (r[2] + r[3]);
    };
    const int r0 = rank_of(me0);
    const int r1 = rows > 8 ? rank_of(me1) : kMaxTopK;   // rows > 8: rare (a warp with > 8 candidates)
    const bool sel0 = has0 && r0 < top_k, sel1 = has1 && r1 < top_k;
    float s0 = 0.f, s1 = 0.f;
    if (sel0) sel_s[r0] = s0 = cand_s[lane >> 2][lane & 3];
    if (sel1) sel_s[r1] = s1 = cand_s[8 + (lane >> 2)][lane & 3];
    __syncwarp();
    float sum = 0.f;                               // in rank order (the reference sums the sorted scores)
#pragma unroll
    for (int r = 0; r < kMaxTopK; ++r)
      if (r < top_k) sum += sel_s[r];
    const float norm = renormalize ? fmaxf(sum, 1e-20f) : 1.f;
    if (sel0) {
      weights[t * top_k + r0] = s0 / norm * scale;
      ids[t * top_k + r0] = int(me0.y);
    }
    if (sel1) {
      weights[t * top_k + r1] = s1 / norm * scale;
      ids[t * top_k + r1] = int(me1.y);
    }
    return;
  }

  // ---- 3. a warp with more than kSlots candidates (ties): top_k rounds of block argmax ----
  for (int r = 0; r < top_k; ++r) {
    uint32_t bk = 0;
    int bq = -1;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      if (key[q] > bk) {                           // strict: the lowest expert among equal keys
        bk = key[q];
        bq = q;
      }
    }
    const uint32_t be = bq >= 0 ? uint32_t(tid + kThreads * bq) : 0xffffffffu;
    const uint32_t w = __reduce_max_sync(kFull, bk);
    const uint32_t we = __reduce_min_sync(kFull, bk == w ? be : 0xffffffffu);
    if (lane == 0) {
      warp_key[warp] = w;
      warp_idx[warp] = we;
    }
    __syncthreads();
    uint32_t best = 0, best_e = 0xffffffffu;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) {
      const uint32_t k = warp_key[v], i = warp_idx[v];
      if (k > best || (k == best && i < best_e)) {
        best = k;
        best_e = i;
      }
    }
    if (bq >= 0 && be == best_e) {                 // the owner: best_e is one expert (keys > 0)
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        if (q == bq) {
          sel_s[r] = s[q];
          key[q] = 0;
        }
      }
      sel_id[r] = int(be);
    }
    __syncthreads();                               // warp_key reused next round
  }

  // ---- output of path 3: lane r of warp 0 writes rank r, the sum in rank order ----
  if (warp == 0) {
    float sum = 0.f;
#pragma unroll
    for (int r = 0; r < kMaxTopK; ++r)
      if (r < top_k) sum += sel_s[r];
    const float norm = renormalize ? fmaxf(sum, 1e-20f) : 1.f;
    if (lane < top_k) {
      weights[t * top_k + lane] = sel_s[lane] / norm * scale;
      ids[t * top_k + lane] = sel_id[lane];
    }
  }
}

template <typename T, int kPer>
void launch_typed(const TopkRouterParams& p, cudaStream_t stream) {
  launch_with_pdl(topk_router_block_kernel<T, kPer>, dim3(static_cast<unsigned>(p.T)), dim3(kThreads), 0, stream,
                  static_cast<const T*>(p.logits), p.bias, p.weights, p.ids, p.E, p.top_k, p.softmax, p.renormalize, p.scale);
}

template <typename T>
void dispatch(const TopkRouterParams& p, cudaStream_t stream) {
  const int per = (p.E + kThreads - 1) / kThreads;  // experts per thread
  if (per <= 1) return launch_typed<T, 1>(p, stream);
  if (per <= 2) return launch_typed<T, 2>(p, stream);
  if (per <= 3) return launch_typed<T, 3>(p, stream);  // E = 384 (Kimi)
  if (per <= 4) return launch_typed<T, 4>(p, stream);
  return launch_typed<T, 8>(p, stream);
}

}  // namespace

bool launch_topk_router_block(const TopkRouterParams& p, cudaStream_t stream) {
  if (p.n_group != 1 || p.T < 1 || p.top_k > kMaxTopK) return false;
  if (p.kernel != kRouterBlock && p.T > kBlockPathMaxT) return false;
  if (p.logits_bf16) {
    dispatch<__nv_bfloat16>(p, stream);
  } else {
    dispatch<float>(p, stream);
  }
  return true;
}

}  // namespace k2k
