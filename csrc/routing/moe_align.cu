// moe_align: stable counting sort of the (token, slot) pairs by local expert.
//
// Stability without atomics deciding the order: the pairs are cut into contiguous ranges, one per
// warp (and per block); a warp counts its range into its own shared-memory histogram (E+1 buckets,
// the last one for pairs not on this rank), the counts are scanned in (expert, block, warp) order, and
// each warp then walks its range in order, 32 pairs per step: __match_any_sync gives each lane its rank
// among the lanes of the step with the same expert, and the step's first lane of each expert advances
// that expert's cursor. Positions therefore follow the pair index within every expert, every run.
//
// Decode (n_pairs <= 32): one warp ranks the pairs directly (moe_align_tiny_kernel). Small inputs
// (n_pairs <= kFusedMaxPairs): one CTA does count, scan and scatter: one launch. Larger inputs: count
// (grid) -> scan (1 CTA) -> scatter (grid), the per-block counts in a caller-owned int32 workspace
// [blocks, E+1].
//
// Values never index memory unchecked: an id outside [0, n_global) or an expert_map value outside
// [0, E) sends the pair to the "not on this rank" bucket (inverse -1), as in reference/align.py.
#include "routing/moe_align.h"

#include "common/pdl.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kSmemCap = 47 * 1024;               // histograms + static scan scratch < 48 KiB (no opt-in)
constexpr int kUnroll = 4;                        // steps of 32 pairs whose loads are in flight together
constexpr int64_t kFusedMaxPairs = 4096;          // one CTA up to here (T = 512 at k = 8)
constexpr int kGridWarps = 8;                     // warps per block on the multi-CTA path
constexpr int kScanThreads = 1024;
K2K_SMEM_BUDGET(moe_align, kSmemCap + 32 * 8);   // dynamic histograms + static warp sums

template <typename Id>
__device__ __forceinline__ int pair_key(const MoeAlignParams& p, int64_t q) {
  const int64_t id = static_cast<int64_t>(static_cast<const Id*>(p.ids)[q]);
  if (id < 0 || id >= p.n_global) return p.E;
  const int e = p.expert_map != nullptr ? p.expert_map[id] : static_cast<int>(id);
  return (e >= 0 && e < p.E) ? e : p.E;
}

// This warp's slice of [begin, end): contiguous, in order of warp index, a multiple of 32 long.
__device__ __forceinline__ void warp_range(int64_t begin, int64_t end, int warps, int w, int64_t& wb, int64_t& we) {
  const int64_t len = end - begin;
  const int64_t per = ((len + warps - 1) / warps + 31) / 32 * 32;
  wb = begin + per * w;
  we = wb + per < end ? wb + per : end;
  if (wb > end) wb = end;
}

// count rounded up to a multiple of the block size: an expert's rows in the block-padded order
__device__ __forceinline__ int padded(int count, int bs) { return (count + bs - 1) / bs * bs; }

__device__ __forceinline__ void zero_smem(int* h, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) h[i] = 0;
}

// Phase 1: h[w * E1 + e] = pairs of expert e in warp w's slice. Order does not matter for counts.
template <typename Id>
__device__ void count_pairs(const MoeAlignParams& p, int64_t begin, int64_t end, int* h) {
  const int warps = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t wb, we;
  warp_range(begin, end, warps, w, wb, we);
  int* hw = h + w * (p.E + 1);
  for (int64_t base = wb; base < we; base += 32 * kUnroll) {
    int key[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t q = base + u * 32 + lane;
      key[u] = q < we ? pair_key<Id>(p, q) : -1;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (key[u] >= 0) atomicAdd(hw + key[u], 1);
  }
}

// Phase 3: h holds each warp's first position per expert; write pairs in order.
template <typename Id>
__device__ void scatter_pairs(const MoeAlignParams& p, int64_t begin, int64_t end, int* h) {
  const int warps = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned lanes_below = (1u << lane) - 1u;
  int64_t wb, we;
  warp_range(begin, end, warps, w, wb, we);
  int* cursor = h + w * (p.E + 1);
  for (int64_t base = wb; base < we; base += 32 * kUnroll) {
    int key[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t q = base + u * 32 + lane;
      key[u] = q < we ? pair_key<Id>(p, q) : -1;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t q = base + u * 32 + lane;
      const int k = key[u];
      const unsigned peers = __match_any_sync(kFull, k);
      const int rank = __popc(peers & lanes_below);
      const int pos = k >= 0 ? cursor[k] + rank : 0;
      __syncwarp();
      if (k >= 0 && rank == 0) cursor[k] += __popc(peers);
      __syncwarp();
      if (k >= 0) {
        p.sorted_pairs[pos] = static_cast<int32_t>(q);
        p.inverse[q] = k < p.E ? pos : -1;
      }
    }
  }
}

// Block-wide exclusive scan of (a, b); returns the prefix of this thread.
__device__ __forceinline__ int2 block_exclusive_scan(int a, int b, int2* warp_sums) {
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, warps = blockDim.x / 32;
  int ia = a, ib = b;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int ya = __shfl_up_sync(kFull, ia, d), yb = __shfl_up_sync(kFull, ib, d);
    if (lane >= d) {
      ia += ya;
      ib += yb;
    }
  }
  if (lane == 31) warp_sums[w] = make_int2(ia, ib);
  __syncthreads();
  if (w == 0) {
    int2 v = lane < warps ? warp_sums[lane] : make_int2(0, 0);
    int sa = v.x, sb = v.y;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int ya = __shfl_up_sync(kFull, sa, d), yb = __shfl_up_sync(kFull, sb, d);
      if (lane >= d) {
        sa += ya;
        sb += yb;
      }
    }
    if (lane < warps) warp_sums[lane] = make_int2(sa - v.x, sb - v.y);   // exclusive per warp
  }
  __syncthreads();
  const int2 off = warp_sums[w];
  return make_int2(off.x + ia - a, off.y + ib - b);
}

// Phase 2: counts c[row * E1 + e] (rows = warps or blocks) -> expert offsets, padded offsets, and
// in place the first position of each (row, expert): offsets[e] + earlier rows' counts of e.
// Thread j owns experts [j*R, j*R + R) so the expert scan is one block scan.
__device__ void scan_counts(const MoeAlignParams& p, int* c, int rows, int2* warp_sums) {
  const int E1 = p.E + 1, bs = p.block_size;
  const int R = (E1 + blockDim.x - 1) / blockDim.x;
  const int e0 = threadIdx.x * R, e1 = min(E1, e0 + R);
  int sc = 0, sp = 0;
  for (int e = e0; e < e1; ++e) {
    int tot = 0;
    for (int r = 0; r < rows; ++r) tot += c[r * E1 + e];
    sc += tot;
    if (e < p.E) sp += padded(tot, bs);
  }
  const int2 pre = block_exclusive_scan(sc, sp, warp_sums);
  int off = pre.x, pad = pre.y;
  for (int e = e0; e < e1; ++e) {
    p.offsets[e] = off;                 // offsets[E] = pairs on this rank; bucket E follows it
    p.padded_offsets[e] = pad;
    int run = off;
    for (int r = 0; r < rows; ++r) {
      const int v = c[r * E1 + e];
      c[r * E1 + e] = run;
      run += v;
    }
    if (e < p.E) pad += padded(run - off, bs);
    off = run;
  }
}

template <typename Id>
__global__ void moe_align_fused_kernel(MoeAlignParams p) {
  extern __shared__ int h[];
  __shared__ int2 warp_sums[32];
  const int warps = blockDim.x / 32;
  zero_smem(h, warps * (p.E + 1));
  __syncthreads();
  count_pairs<Id>(p, 0, p.n_pairs, h);
  __syncthreads();
  scan_counts(p, h, warps, warp_sums);
  __syncthreads();
  scatter_pairs<Id>(p, 0, p.n_pairs, h);
}

// Decode (n_pairs <= kTinyMaxPairs = 32, i.e. T <= 4 at k = 8): warp 0 holds one pair per lane; a
// pair's sorted position is (pairs with a smaller key) + (its rank among equal keys, by pair index), so
// no histogram, scan or second pass is needed; then every thread writes the offsets of its experts as
// counts over the <= 32 keys. One global round trip (the ids) and one barrier: the general single-CTA
// path above spends ~4.8 us per call inside fused_moe's graph on the H200 (benchmarks/probe_decode.py).
constexpr int kTinyMaxPairs = 32;
constexpr int kTinyThreads = 256;

template <typename Id>
__global__ void __launch_bounds__(kTinyThreads) moe_align_tiny_kernel(MoeAlignParams p) {
  // Decode: the next kernel may be fused_moe's gate_up GEMM (launched with PDL; it reads nothing of ours
  // before its griddepcontrol.wait), whose prologue can then overlap this kernel.
  pdl_launch_dependents();
  __shared__ int keys[kTinyMaxPairs];      // E + 1 for lanes without a pair: never below any expert
  __shared__ int padded_count[kTinyMaxPairs];   // per distinct on-rank key, at its first pair; else 0
  const int n = static_cast<int>(p.n_pairs), lane = threadIdx.x % 32;
  if (threadIdx.x < 32) {
    const int key = lane < n ? pair_key<Id>(p, lane) : p.E + 1;
    const unsigned peers = __match_any_sync(kFull, key);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    int below = 0;
#pragma unroll
    for (int i = 0; i < 32; ++i) below += __shfl_sync(kFull, key, i) < key;
    if (lane < n) {
      const int pos = below + rank;
      p.sorted_pairs[pos] = lane;
      p.inverse[lane] = key < p.E ? pos : -1;
    }
    const int bs = p.block_size, count = __popc(peers);
    keys[lane] = key;
    padded_count[lane] = key < p.E && rank == 0 ? padded(count, bs) : 0;
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= p.E; e += blockDim.x) {
    int off = 0, pad = 0;
    for (int i = 0; i < n; ++i) {
      const bool before = keys[i] < e;
      off += before;
      pad += before ? padded_count[i] : 0;
    }
    p.offsets[e] = off;
    p.padded_offsets[e] = pad;
  }
}

// Multi-CTA: block b owns pairs [b * chunk, (b+1) * chunk).
template <typename Id>
__global__ void moe_align_count_kernel(MoeAlignParams p, int64_t chunk) {
  extern __shared__ int h[];
  const int warps = blockDim.x / 32, E1 = p.E + 1;
  const int64_t begin = int64_t(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < p.n_pairs ? begin + chunk : p.n_pairs;
  zero_smem(h, warps * E1);
  __syncthreads();
  count_pairs<Id>(p, begin, end, h);
  __syncthreads();
  for (int e = threadIdx.x; e < E1; e += blockDim.x) {
    int tot = 0;
    for (int w = 0; w < warps; ++w) tot += h[w * E1 + e];
    p.workspace[int64_t(blockIdx.x) * E1 + e] = tot;
  }
}

__global__ void moe_align_scan_kernel(MoeAlignParams p, int blocks) {
  __shared__ int2 warp_sums[32];
  scan_counts(p, p.workspace, blocks, warp_sums);
}

template <typename Id>
__global__ void moe_align_scatter_kernel(MoeAlignParams p, int64_t chunk) {
  extern __shared__ int h[];
  const int warps = blockDim.x / 32, E1 = p.E + 1;
  const int64_t begin = int64_t(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < p.n_pairs ? begin + chunk : p.n_pairs;
  zero_smem(h, warps * E1);
  __syncthreads();
  count_pairs<Id>(p, begin, end, h);
  __syncthreads();
  for (int e = threadIdx.x; e < E1; e += blockDim.x) {
    int run = p.workspace[int64_t(blockIdx.x) * E1 + e];
    for (int w = 0; w < warps; ++w) {
      const int v = h[w * E1 + e];
      h[w * E1 + e] = run;
      run += v;
    }
  }
  __syncthreads();
  scatter_pairs<Id>(p, begin, end, h);
}

int smem_warps(int E, int want) {
  const int fit = kSmemCap / ((E + 1) * 4);      // >= 1 for E <= kMoeAlignMaxExperts
  return want < fit ? want : fit;
}

int64_t grid_chunk(int64_t n_pairs) {
  // <= 1024 blocks (bounded workspace and scan length), >= 1024 pairs per block.
  int64_t chunk = ((n_pairs + 1023) / 1024 + 255) / 256 * 256;
  return chunk < 1024 ? 1024 : chunk;
}

template <typename Id>
void launch_typed(const MoeAlignParams& p, cudaStream_t stream) {
  const int E1 = p.E + 1;
  if (p.n_pairs <= kTinyMaxPairs) {
    moe_align_tiny_kernel<Id><<<1, kTinyThreads, 0, stream>>>(p);
    return;
  }
  if (p.n_pairs <= kFusedMaxPairs) {
    int warps = static_cast<int>((p.n_pairs + 127) / 128);
    warps = warps < 4 ? 4 : (warps > 32 ? 32 : warps);
    warps = smem_warps(p.E, warps);
    moe_align_fused_kernel<Id><<<1, warps * 32, warps * E1 * 4, stream>>>(p);
    return;
  }
  const int64_t chunk = grid_chunk(p.n_pairs);
  const int blocks = static_cast<int>((p.n_pairs + chunk - 1) / chunk);
  const int warps = smem_warps(p.E, kGridWarps);
  const int smem = warps * E1 * 4;
  moe_align_count_kernel<Id><<<blocks, warps * 32, smem, stream>>>(p, chunk);
  moe_align_scan_kernel<<<1, kScanThreads, 0, stream>>>(p, blocks);
  moe_align_scatter_kernel<Id><<<blocks, warps * 32, smem, stream>>>(p, chunk);
}

}  // namespace

int64_t moe_align_workspace_ints(int64_t n_pairs, int E) {
  if (n_pairs <= kFusedMaxPairs) return 0;
  const int64_t chunk = grid_chunk(n_pairs);
  return (n_pairs + chunk - 1) / chunk * (E + 1);
}

void launch_moe_align(const MoeAlignParams& p, cudaStream_t stream) {
  if (p.ids64) {
    launch_typed<int64_t>(p, stream);
  } else {
    launch_typed<int32_t>(p, stream);
  }
}

}  // namespace k2k
