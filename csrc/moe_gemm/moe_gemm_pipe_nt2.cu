// Pipelined streaming kernel config: 16 tokens per pass, K step 256, 4 shared-memory stages.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
using Cfg2 = moe::PipeCfg<2, 256, 4>;
K2K_SMEM_BUDGET(moe_gemm_pipe_nt2, Cfg2::kSmemBytes + moe::kPipeStaticSmemReserve);
bool launch_moe_gemm_pipe_nt2(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_pipe<2, 256, 4>(p, smem_limit - moe::kPipeStaticSmemReserve, stream);
}
}  // namespace k2k
