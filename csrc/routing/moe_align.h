// Framework-free launcher of moe_align: group the (token, slot) pairs of ids [T, k] by expert,
// stable by pair index, with offsets, padded offsets and the inverse map. Deterministic, no host sync.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {

// Per-warp histograms of E+1 counters live in shared memory; this keeps them within the default
// 48 KiB (no opt-in) with at least one warp per block.
constexpr int kMoeAlignMaxExperts = 8192;

struct MoeAlignParams {
  const void* ids = nullptr;        // [n_pairs] int32 or int64 (ids [T, k] flattened)
  bool ids64 = false;
  int64_t n_pairs = 0;              // T * k
  int64_t n_global = 0;             // valid ids are [0, n_global): expert_map length, else E
  const int32_t* expert_map = nullptr;   // [n_global] global -> local expert, -1 = not on this rank
  int E = 0;                        // local experts, 1..kMoeAlignMaxExperts
  int block_size = 1;
  int32_t* offsets = nullptr;       // [E+1]
  int32_t* sorted_pairs = nullptr;  // [n_pairs]
  int32_t* inverse = nullptr;       // [n_pairs]
  int32_t* padded_offsets = nullptr;  // [E+1]
  int32_t* workspace = nullptr;     // moe_align_workspace_ints(n_pairs, E) int32 (may be 0 ints)
};

// int32 scratch the launch needs (0 for the single-CTA path of small n_pairs).
int64_t moe_align_workspace_ints(int64_t n_pairs, int E);

// Always launches (n_pairs == 0 still writes the zero offsets).
void launch_moe_align(const MoeAlignParams& p, cudaStream_t stream);

}  // namespace k2k
