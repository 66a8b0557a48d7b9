// Pipelined streaming kernel, alternative 8-token config (K step 256, 5 stages, 66.5 KB: three CTAs per
// H200 SM instead of two). Selected by K2K_MOE_GEMM_CFG=nt1b, for tuning comparisons.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
using Cfg1b = moe::PipeCfg<1, 256, 5>;
K2K_SMEM_BUDGET(moe_gemm_pipe_nt1b, Cfg1b::kSmemBytes + moe::kPipeStaticSmemReserve);
bool launch_moe_gemm_pipe_nt1b(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_pipe<1, 256, 5>(p, smem_limit - moe::kPipeStaticSmemReserve, stream);
}
}  // namespace k2k
