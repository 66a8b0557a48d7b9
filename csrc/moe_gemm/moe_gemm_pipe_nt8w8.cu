// Pipelined streaming kernel, 64-token passes with 8 warps = 128 weight rows per CTA (K step 128, 3 stages,
// 75 KB): half the L2->SMEM activation traffic of the 64-row config, which bounds prefill. Selected by
// K2K_MOE_GEMM_CFG=nt8w8 (tuning knob; compiled, not yet measured).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
using Cfg8w8 = moe::PipeCfg<8, 128, 3, 8>;
K2K_SMEM_BUDGET(moe_gemm_pipe_nt8w8, Cfg8w8::kSmemBytes + moe::kPipeStaticSmemReserve);
bool launch_moe_gemm_pipe_nt8w8(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_pipe<8, 128, 3, 8>(p, smem_limit - moe::kPipeStaticSmemReserve, stream);
}
}  // namespace k2k
