// Framework-free launchers of the fused_moe family: the small memory-bound stages that sit between
// the router/align and the two grouped GEMMs of a MoE layer (docs/fused_moe.md). All rows are bf16,
// contiguous; every index read from device memory is range-checked on the device (never trusted).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {

// out[r, :] = x[sorted_pairs[r] / top_k, :] for r < M; a pair outside [0, T * top_k) gives a zero row.
void launch_moe_gather(const __nv_bfloat16* x, const int32_t* sorted_pairs, __nv_bfloat16* out, int64_t T,
                       int64_t H, int64_t M, int top_k, cudaStream_t stream);

// out[r, i] = bf16(silu(f32 gate_up[r, i]) * f32 gate_up[r, I + i]) for i < I.
void launch_moe_silu_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int64_t M, int64_t I,
                         cudaStream_t stream);

// out[t, :] = bf16(sum_{j < k} w[t, j] * f32(y[inverse[t*k + j], :]) + f32(shared[t, :])): fp32, slot
// order j = 0..k-1 (deterministic, no atomics); inverse outside [0, M) (e.g. -1: expert on another
// rank) contributes nothing; shared may be nullptr.
void launch_moe_combine(const __nv_bfloat16* y, const int32_t* inverse, const float* topk_weights,
                        const __nv_bfloat16* shared, __nv_bfloat16* out, int64_t T, int k, int64_t H, int64_t M,
                        cudaStream_t stream);

}  // namespace k2k
