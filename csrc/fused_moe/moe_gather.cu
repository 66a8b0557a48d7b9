// Row gather into expert order (x[T, H] -> a[M, H]): each block copies one chunk of columns of one
// output row with 16-byte vectors (a scalar tail loop covers H % 8 or unaligned rows).
#include "fused_moe/fused_moe.h"
#include "common/pdl.cuh"
#include "fused_moe/vec.cuh"

namespace k2k {
namespace {

__global__ void __launch_bounds__(fmoe::kThreads)
moe_gather_kernel(const __nv_bfloat16* __restrict__ x, const int32_t* __restrict__ pairs, __nv_bfloat16* __restrict__ out,
                  int64_t T, int64_t H, int64_t M, int top_k, bool vec) {
  pdl_launch_dependents();   // the next kernel (a moe_gemm launched with PDL) may start its prologue now
  const int64_t c0 = int64_t(blockIdx.x) * fmoe::kColsPerBlock;
  for (int64_t r = blockIdx.y; r < M; r += gridDim.y) {
    const int64_t p = pairs[r];
    const bool ok = p >= 0 && p < T * top_k;          // never trust a device value: out of range -> zeros
    const __nv_bfloat16* src = x + (ok ? p / top_k : 0) * H;
    __nv_bfloat16* dst = out + r * H;
    if (vec) {
      const int64_t c = c0 + int64_t(threadIdx.x) * fmoe::kVec;
      if (c < H) {
        uint4 v = ok ? *reinterpret_cast<const uint4*>(src + c) : make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(dst + c) = v;
      }
    } else {
      for (int64_t c = c0 + threadIdx.x; c < c0 + fmoe::kColsPerBlock && c < H; c += fmoe::kThreads)
        dst[c] = ok ? src[c] : __float2bfloat16(0.f);
    }
  }
}

}  // namespace

void launch_moe_gather(const __nv_bfloat16* x, const int32_t* sorted_pairs, __nv_bfloat16* out, int64_t T,
                       int64_t H, int64_t M, int top_k, cudaStream_t stream) {
  if (M == 0 || H == 0) return;
  const bool vec = H % fmoe::kVec == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const dim3 grid(static_cast<unsigned>((H + fmoe::kColsPerBlock - 1) / fmoe::kColsPerBlock),
                  static_cast<unsigned>(M < fmoe::kMaxGridY ? M : fmoe::kMaxGridY));
  moe_gather_kernel<<<grid, fmoe::kThreads, 0, stream>>>(x, sorted_pairs, out, T, H, M, top_k, vec);
}

}  // namespace k2k
