// Framework-free launcher of the per-expert NVFP4 activation quantization for grouped GEMMs whose
// scale operand is CUTLASS's 128x4-swizzled layout (the SM120 W4A4 path).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {

// Rows of the swizzled scale buffer for M rows over E experts: every non-empty expert's block is
// padded to 128 rows, so sum(round_up(M_e, 128)) <= M + 127 * min(E, M), rounded up to 128.
inline int64_t nvfp4_expert_sf_rows(int64_t M, int64_t E) {
  const int64_t n = E < M ? E : M;
  return (M + 127 * n + 127) / 128 * 128;
}

// Output row r (of M) takes source row row_idx[r] of x (or r when row_idx is null); rows
// [offsets[e], offsets[e+1]) belong to expert e and use global_scale[e] (or global_scale[0] when
// gs_per_expert is false). Writes:
//   packed  [M, K/2]       e2m1 codes (rows outside every expert, and gathered indices outside
//                          [0, x_rows), get code 0 / a zero scale: never an out-of-bounds read);
//   sf      [sf_rows, kb_pad] e4m3, 128x4 swizzled; expert e's rows start at row sf_offsets[e];
//                          every byte not holding a scale (padding rows and columns) is 0;
//   sf_offsets [E+1]       int32 prefix sums of round_up(M_e, 128) (device-side, no host sync).
// Offsets are clamped to [0, M]; a decreasing pair is an empty expert.
void launch_quantize_nvfp4_experts(const __nv_bfloat16* x, int64_t x_rows, const int32_t* row_idx,
                                   const float* global_scale, bool gs_per_expert, const int32_t* expert_offsets,
                                   int64_t E, uint8_t* packed, uint8_t* sf, int32_t* sf_offsets, int64_t M,
                                   int64_t K, cudaStream_t stream);

}  // namespace k2k
