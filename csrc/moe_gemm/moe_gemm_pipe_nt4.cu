// Pipelined streaming kernel config: 32 tokens per pass, K step 256, 3 shared-memory stages.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
using Cfg4 = moe::PipeCfg<4, 256, 3>;
K2K_SMEM_BUDGET(moe_gemm_pipe_nt4, Cfg4::kSmemBytes + moe::kPipeStaticSmemReserve);
bool launch_moe_gemm_pipe_nt4(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_pipe<4, 256, 3>(p, smem_limit - moe::kPipeStaticSmemReserve, stream);
}
}  // namespace k2k
