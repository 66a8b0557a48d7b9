// Framework-free entry points of the moe_gemm family (NVFP4 weights x BF16 activations, grouped by
// contiguous expert row segments). The torch launcher (moe_gemm_ops.cpp) checks tensors and calls these.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {

// kTiled: w AND w_scale permuted by k2kernels/moe_gemm_prepare.py (contiguous 64-row x 512-K tiles).
enum MoeScaleLayout : int { kScaleLinear = 0, kScaleSwizzled = 1, kTiled = 2 };
constexpr int kTileN = 64, kTileK = 512;

struct MoeGemmParams {
  const __nv_bfloat16* a;          // [M, K] (for act=nvfp4: the fake-quantized e2m1 x e4m3 rows)
  const uint8_t* w;                // [E, N, K/2] packed e2m1, element 2i in the low nibble
  const uint8_t* w_scale;          // e4m3 block scales: linear [E, N, K/16] or swizzled [E, n_pad, kb_pad]
  const float* w_alpha;            // [E] per-expert global weight scale
  const float* a_scale;            // nullptr (act=bf16), or [1] / [E] activation global scale (act=nvfp4)
  const int32_t* expert_offsets;   // [E+1] on device; every value is clamped to [0, M] before use
  __nv_bfloat16* out;              // [M, N]
  int64_t M;
  int64_t lda;                     // elements between rows of a: K, or 0 (one row for all M; bulk kernel only)
  int N, K, E;
  int scale_layout;                // MoeScaleLayout
  int n_pad, kb_pad;               // swizzled scale dims (pad128(N), pad4(K/16)); unused for linear
  int a_scale_per_expert;          // a_scale has E values (else one)
};

// Swap-AB weight-streaming kernels (tokens on the MMA's N side, 8 * nt tokens per pass): the persistent
// one (kStreamPersist, nt in {1, 2, 4}; moe_gemm_persist.cuh) or the cp.async pipelined one
// (kStreamPipe, nt in {1, 2, 4, 8}; moe_gemm_pipe.cuh; persist with nt = 8 runs it too). Need
// K % 128 == 0, 16-byte aligned a, w and w_scale. Return false (launching nothing) if the config's
// shared memory > smem_limit.
enum MoeStreamVariant : int { kStreamPipe = 0, kStreamPersist = 1 };
bool launch_moe_gemm_stream(const MoeGemmParams& p, int nt, int variant, int smem_limit, cudaStream_t stream);

// Decode kernel fed by bulk copies (moe_gemm_bulk.cuh; sm_90+): passes of tokens = 4 or 8 rows, two
// stages. Needs the tiled layout and 16-byte aligned a, w, w_scale. Returns false (launching nothing)
// on other layouts, before sm_90, or if its shared memory > smem_limit. Launched with programmatic
// dependent launch (csrc/common/pdl.cuh): it may start while the stream's previous kernel ends, and
// reads nothing that kernel writes before griddepcontrol.wait (only a speculative L2 prefetch).
bool launch_moe_gemm_bulk(const MoeGemmParams& p, int tokens, int smem_limit, cudaStream_t stream);

// Prefill tile kernel (moe_gemm_tile.cuh): bm = 64 or 128 tokens x 128 weight rows per CTA, weights
// dequantized once per CTA into shared memory. Needs K % 64 == 0 and 16-byte aligned a, w, w_scale.
// Returns false (launching nothing) if its shared memory > smem_limit or M needs grid.y > 65535.
bool launch_moe_gemm_tile(const MoeGemmParams& p, int bm, int smem_limit, cudaStream_t stream);

// Prefill kernel for sm_90a (moe_gemm_wgmma.cuh): warpgroup MMA, tokens = 64, 96 or 128 tokens x 128
// weight rows per CTA, the weights dequantized in registers. Needs the tiled layout and 16-byte aligned
// a, w, w_scale. Returns false (launching nothing) on other layouts, on GPUs other than sm_90, if its
// shared memory > smem_limit or M needs grid.y > 65535.
bool launch_moe_gemm_wgmma(const MoeGemmParams& p, int tokens, int smem_limit, cudaStream_t stream);

// Any K % 16 == 0, any alignment: one thread per output, fp32 dot product. Slow; for odd shapes only.
void launch_moe_gemm_generic(const MoeGemmParams& p, cudaStream_t stream);

// W4A4 emulation (act=nvfp4 on GPUs without the SM120 kernel): each row r of a (expert e owning r) is
// quantized with global scale a_scale[e] exactly like k2kernels/nvfp4.py:quantize_blocks and written
// back as bf16 e2m1 * e4m3 (exact in bf16); the GEMM folds a_scale[e] into its fp32 epilogue.
void launch_moe_act_fake_quant(const __nv_bfloat16* a, const float* a_scale, int a_scale_per_expert,
                               const int32_t* expert_offsets, int E, int64_t M, int K, __nv_bfloat16* a_q,
                               cudaStream_t stream);

}  // namespace k2k
