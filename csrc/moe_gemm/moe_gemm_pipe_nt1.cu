// Pipelined streaming kernel config: 8 tokens per pass, K step 512, 3 shared-memory stages.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
using Cfg1 = moe::PipeCfg<1, 512, 3>;
K2K_SMEM_BUDGET(moe_gemm_pipe_nt1, Cfg1::kSmemBytes + moe::kPipeStaticSmemReserve);
bool launch_moe_gemm_pipe_nt1(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_pipe<1, 512, 3>(p, smem_limit - moe::kPipeStaticSmemReserve, stream);
}
}  // namespace k2k
