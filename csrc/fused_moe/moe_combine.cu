// Top-k weighted combine as a reduction by the inverse map: each output row t reads its k expert
// rows y[inverse[t*k + j]] and sums w[t, j] * y in fp32 in slot order j = 0..k-1, then adds the
// shared expert's row. No atomics, so the result is bit-identical run to run (a scatter-add with
// atomics would not be), and each output is written once.
#include "fused_moe/fused_moe.h"
#include "fused_moe/vec.cuh"

namespace k2k {
namespace {

constexpr int kSlotBatch = 8;                            // Kimi-K2: top-8, one batch

__global__ void __launch_bounds__(fmoe::kThreads)
moe_combine_kernel(const __nv_bfloat16* __restrict__ y, const int32_t* __restrict__ inverse,
                   const float* __restrict__ w, const __nv_bfloat16* __restrict__ shared, __nv_bfloat16* __restrict__ out,
                   int64_t T, int k, int64_t H, int64_t M, bool vec) {
  const int64_t c0 = int64_t(blockIdx.x) * fmoe::kColsPerBlock;
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    const int32_t* inv = inverse + t * k;
    const float* wt = w + t * k;
    if (vec) {
      const int64_t c = c0 + int64_t(threadIdx.x) * fmoe::kVec;
      if (c >= H) continue;
      float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      // Slots in batches of kSlotBatch: the batch's inverse entries, then its rows, are loaded before any
      // is used, so a decode call waits ~2 memory latencies per batch instead of 2 per slot (k = 8: 16).
      for (int j0 = 0; j0 < k; j0 += kSlotBatch) {
        int64_t r[kSlotBatch];
        float wj[kSlotBatch];
        uint4 v[kSlotBatch];
#pragma unroll
        for (int u = 0; u < kSlotBatch; ++u) {
          r[u] = j0 + u < k ? inv[j0 + u] : -1;
          wj[u] = j0 + u < k ? wt[j0 + u] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kSlotBatch; ++u)       // r outside [0, M): not on this rank (EP) or bad: skipped
          if (r[u] >= 0 && r[u] < M) v[u] = *reinterpret_cast<const uint4*>(y + r[u] * H + c);
#pragma unroll
        for (int u = 0; u < kSlotBatch; ++u) {     // in slot order, as the reference
          if (r[u] < 0 || r[u] >= M) continue;
          float f[8];
          fmoe::unpack8(v[u], f);
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(wj[u], f[i]));   // as the reference: no FMA
        }
      }
      if (shared != nullptr) {
        float f[8];
        fmoe::unpack8(*reinterpret_cast<const uint4*>(shared + t * H + c), f);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] += f[i];
      }
      *reinterpret_cast<uint4*>(out + t * H + c) = fmoe::pack8(acc);
    } else {
      for (int64_t c = c0 + threadIdx.x; c < c0 + fmoe::kColsPerBlock && c < H; c += fmoe::kThreads) {
        float acc = 0.f;
        for (int j = 0; j < k; ++j) {
          const int64_t r = inv[j];
          if (r < 0 || r >= M) continue;
          acc = __fadd_rn(acc, __fmul_rn(wt[j], __bfloat162float(y[r * H + c])));
        }
        if (shared != nullptr) acc += __bfloat162float(shared[t * H + c]);
        out[t * H + c] = __float2bfloat16(acc);
      }
    }
  }
}

}  // namespace

void launch_moe_combine(const __nv_bfloat16* y, const int32_t* inverse, const float* topk_weights,
                        const __nv_bfloat16* shared, __nv_bfloat16* out, int64_t T, int k, int64_t H, int64_t M,
                        cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  const bool vec = H % fmoe::kVec == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                   (shared == nullptr || reinterpret_cast<uintptr_t>(shared) % 16 == 0);
  const dim3 grid(static_cast<unsigned>((H + fmoe::kColsPerBlock - 1) / fmoe::kColsPerBlock),
                  static_cast<unsigned>(T < fmoe::kMaxGridY ? T : fmoe::kMaxGridY));
  moe_combine_kernel<<<grid, fmoe::kThreads, 0, stream>>>(y, inverse, topk_weights, shared, out, T, k, H, M, vec);
}

}  // namespace k2k
