// Framework-free interface of the SM120 W4A4 grouped GEMM (NVFP4 x NVFP4 -> BF16), used by
// sm120_ops.cpp (the torch launcher) and implemented by one .cu per tile config (w4a4_t*.cu) plus
// the device-side problem setup (w4a4_problem_setup.cu). No CUTLASS or torch types cross this
// header: the launcher stays a fast-compiling plain C++ TU.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace k2k::sm120 {

// One grouped problem: E experts, expert e owns rows [offsets[e], offsets[e+1]) of A and D.
struct W4A4Problem {
  const uint8_t* a;            // [M, K/2] packed e2m1 activations (row-major, K contiguous)
  const uint8_t* a_sf;         // swizzled e4m3 activation scales; expert e's block starts at row sf_offsets[e]
  const int32_t* sf_offsets;   // [E+1] 128-row-aligned starts of each expert's scale block (device)
  const uint8_t* w;            // [E, N, K/2] packed e2m1 weights
  const uint8_t* w_sf;         // [E, pad128(N), pad4(K/16)] swizzled e4m3 weight scales
  const float* w_alpha;        // [E] weight_scale_2
  const float* a_scale;        // [E] or [1] activation global scale (a_scale_numel says which)
  int a_scale_numel;
  const int32_t* expert_offsets;   // [E+1] (device)
  void* d;                     // [M, N] bf16 output
  int64_t M, N, K;
  int E;
  int sm_count;                // persistent grid size (SMs of the device)
};

// Device-side argument arrays (one entry per expert). The launcher carves them out of one
// caller/caching-allocator buffer of w4a4_setup_bytes(E) bytes (each array 128-byte aligned).
struct W4A4SetupArrays {
  void* problem_shapes;        // cutlass::gemm::GroupProblemShape<Shape<int,int,int>>::UnderlyingProblemShape [E]
  const void** ptr_a;
  const void** ptr_b;
  const void** ptr_sfa;
  const void** ptr_sfb;
  void** ptr_d;
  void* stride_a;              // InternalStrideA [E]
  void* stride_b;
  void* stride_d;
  void* layout_sfa;            // InternalLayoutSFA [E]
  void* layout_sfb;
  float* alpha;                // [E] a_scale[e] * w_alpha[e]
  const float** ptr_alpha;     // [E] &alpha[e]
};

size_t w4a4_setup_bytes(int E);
W4A4SetupArrays w4a4_carve_setup(void* workspace, int E);

// One tiny kernel: fills every array of `arrays` from the device-side expert offsets (no host sync).
cudaError_t w4a4_problem_setup(const W4A4Problem& p, const W4A4SetupArrays& arrays, cudaStream_t stream);

// Zeroes output rows [offsets[E], M) (rows outside every expert), on device, so the op's output is
// fully defined without a full-size memset.
cudaError_t w4a4_zero_tail_rows(const W4A4Problem& p, cudaStream_t stream);

// Static facts of a config, taken from the instantiated CUTLASS kernel type.
struct W4A4TileInfo {
  const char* name;
  int tile_m, tile_n, tile_k;
  int stages;
  int smem_bytes;              // sizeof(GemmKernel::SharedStorage): the dynamic SMEM the launch requests
  int total_smem_bytes;        // + the cubin's static SMEM (measured allowance): what must fit the device
  int mainloop_smem_bytes;     // CollectiveMainloop::SharedStorage
  int epilogue_smem_bytes;     // CollectiveEpilogue::SharedStorage
};

// Per-config entry points, one TU each (w4a4_<NAME>.cu, defined by K2K_W4A4_CONFIG in w4a4_gemm.cuh):
//   info: the config's tile, stages and SMEM bytes;
//   workspace: CUTLASS workspace bytes for p.E groups (device-side problem shapes only);
//   run: can_implement + initialize + launch on `stream`; nullptr on success, else a message.
#define K2K_W4A4_DECLARE(NAME)                                                                             \
  W4A4TileInfo w4a4_info_##NAME();                                                                         \
  size_t w4a4_workspace_##NAME(const W4A4Problem& p, const W4A4SetupArrays& a);                            \
  const char* w4a4_run_##NAME(const W4A4Problem& p, const W4A4SetupArrays& a, void* ws, cudaStream_t s);

// The configs we build. Adding one = one line here, one line in sm120_ops.cpp's table, one TU.
#define K2K_W4A4_FOR_EACH_CONFIG(X) X(t128x128) X(t128x128_pingpong) X(t256x128)

K2K_W4A4_FOR_EACH_CONFIG(K2K_W4A4_DECLARE)

}  // namespace k2k::sm120
