// Device-side problem setup of the W4A4 grouped GEMM: one thread per expert turns the device
// expert offsets into CUTLASS's per-group argument arrays (problem shapes, operand pointers,
// strides, scale-factor layouts, alpha pointers). Nothing is read back to the host, so the op is
// graph-capturable and never syncs. Offsets that are out of range are clamped to [0, M] and a
// decreasing pair gives an empty expert: no input value can make the GEMM read or write out of bounds.
#include "cutlass_sm120/w4a4_cute_types.cuh"
#include "cutlass_sm120/w4a4_types.h"
#include "cutlass/util/packed_stride.hpp"

namespace k2k::sm120 {
namespace {

constexpr size_t kAlign = 128;

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Byte sizes of the arrays, in carve order.
struct Sizes {
  size_t s[13];
  explicit Sizes(int E) {
    const size_t e = static_cast<size_t>(E);
    s[0] = e * sizeof(UnderlyingProblemShape);
    for (int i = 1; i <= 5; ++i) s[i] = e * sizeof(void*);
    s[6] = e * sizeof(StrideA);
    s[7] = e * sizeof(StrideB);
    s[8] = e * sizeof(StrideD);
    s[9] = e * sizeof(LayoutSF);
    s[10] = e * sizeof(LayoutSF);
    s[11] = e * sizeof(float);
    s[12] = e * sizeof(float*);
  }
};

__device__ __forceinline__ int64_t clamp_row(int64_t r, int64_t M) { return r < 0 ? 0 : (r > M ? M : r); }

__global__ void w4a4_setup_kernel(W4A4Problem p, W4A4SetupArrays arr) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= p.E) return;
  const int64_t r0 = clamp_row(p.expert_offsets[e], p.M);
  const int64_t r1 = clamp_row(p.expert_offsets[e + 1], p.M);
  const int m = r1 > r0 ? static_cast<int>(r1 - r0) : 0;
  const int N = static_cast<int>(p.N), K = static_cast<int>(p.K);
  const int64_t kb_pad = (p.K / kSfVec + 3) / 4 * 4;      // scale columns padded to the 4-wide atom
  const int64_t n_pad = (p.N + 127) / 128 * 128;           // scale rows padded to the 128-row atom

  static_cast<UnderlyingProblemShape*>(arr.problem_shapes)[e] = UnderlyingProblemShape(m, N, K);
  arr.ptr_a[e] = p.a + r0 * (p.K / 2);
  arr.ptr_b[e] = p.w + static_cast<int64_t>(e) * p.N * (p.K / 2);
  // sf_offsets[e] is a multiple of 128 rows, so every expert's scale block (and its TMA base) is
  // 128 * kb_pad >= 512-byte aligned.
  arr.ptr_sfa[e] = p.a_sf + static_cast<int64_t>(p.sf_offsets[e]) * kb_pad;
  arr.ptr_sfb[e] = p.w_sf + static_cast<int64_t>(e) * n_pad * kb_pad;
  arr.ptr_d[e] = static_cast<uint16_t*>(p.d) + r0 * p.N;
  static_cast<StrideA*>(arr.stride_a)[e] = cutlass::make_cute_packed_stride(StrideA{}, cute::make_shape(m, K, 1));
  static_cast<StrideB*>(arr.stride_b)[e] = cutlass::make_cute_packed_stride(StrideB{}, cute::make_shape(N, K, 1));
  static_cast<StrideD*>(arr.stride_d)[e] = cutlass::make_cute_packed_stride(StrideD{}, cute::make_shape(m, N, 1));
  const auto mnk = cute::make_shape(m, N, K, 1);
  static_cast<LayoutSF*>(arr.layout_sfa)[e] = BlkScaledConfig::tile_atom_to_shape_SFA(mnk);
  static_cast<LayoutSF*>(arr.layout_sfb)[e] = BlkScaledConfig::tile_atom_to_shape_SFB(mnk);
  // alpha_e = input_scale_e * weight_scale_2_e: the kernel's accumulator is sum(e2m1 * sf_a * e2m1 * sf_b).
  arr.alpha[e] = p.a_scale[p.a_scale_numel == 1 ? 0 : e] * p.w_alpha[e];
  arr.ptr_alpha[e] = arr.alpha + e;
}

__global__ void zero_tail_kernel(const int32_t* __restrict__ offsets, int E, int64_t M, int64_t N, uint4* __restrict__ d) {
  const int64_t end = clamp_row(offsets[E], M);
  // N % 8 == 0 (checked by the launcher): a row is N / 8 16-byte vectors.
  const int64_t vec_per_row = N / 8;
  const int64_t first = end * vec_per_row, last = M * vec_per_row;
  for (int64_t i = first + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < last; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = make_uint4(0, 0, 0, 0);
}

}  // namespace

size_t w4a4_setup_bytes(int E) {
  const Sizes sz(E);
  size_t total = 0;
  for (size_t s : sz.s) total += align_up(s);
  return total;
}

W4A4SetupArrays w4a4_carve_setup(void* workspace, int E) {
  const Sizes sz(E);
  char* base = static_cast<char*>(workspace);
  void* ptrs[13];
  for (int i = 0; i < 13; ++i) {
    ptrs[i] = base;
    base += align_up(sz.s[i]);
  }
  W4A4SetupArrays a;
  a.problem_shapes = ptrs[0];
  a.ptr_a = static_cast<const void**>(ptrs[1]);
  a.ptr_b = static_cast<const void**>(ptrs[2]);
  a.ptr_sfa = static_cast<const void**>(ptrs[3]);
  a.ptr_sfb = static_cast<const void**>(ptrs[4]);
  a.ptr_d = static_cast<void**>(ptrs[5]);
  a.stride_a = ptrs[6];
  a.stride_b = ptrs[7];
  a.stride_d = ptrs[8];
  a.layout_sfa = ptrs[9];
  a.layout_sfb = ptrs[10];
  a.alpha = static_cast<float*>(ptrs[11]);
  a.ptr_alpha = static_cast<const float**>(ptrs[12]);
  return a;
}

cudaError_t w4a4_problem_setup(const W4A4Problem& p, const W4A4SetupArrays& arrays, cudaStream_t stream) {
  if (p.E == 0) return cudaSuccess;
  constexpr int kThreads = 128;
  w4a4_setup_kernel<<<(p.E + kThreads - 1) / kThreads, kThreads, 0, stream>>>(p, arrays);
  return cudaGetLastError();
}

cudaError_t w4a4_zero_tail_rows(const W4A4Problem& p, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  // Sized for the worst case (every row outside the experts), capped; threads past the tail exit at once.
  const int64_t vecs = p.M * (p.N / 8);
  const int64_t want = (vecs + kThreads - 1) / kThreads;
  const int grid = static_cast<int>(want < 1024 ? want : 1024);
  zero_tail_kernel<<<grid, kThreads, 0, stream>>>(p.expert_offsets, p.E, p.M, p.N, static_cast<uint4*>(p.d));
  return cudaGetLastError();
}

}  // namespace k2k::sm120
