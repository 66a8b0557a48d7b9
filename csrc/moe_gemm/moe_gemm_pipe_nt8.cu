// Pipelined streaming kernel config: 64 tokens per pass, K step 128, 4 shared-memory stages.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_pipe.cuh"

namespace k2k {
using Cfg8 = moe::PipeCfg<8, 128, 4>;
K2K_SMEM_BUDGET(moe_gemm_pipe_nt8, Cfg8::kSmemBytes + moe::kPipeStaticSmemReserve);
bool launch_moe_gemm_pipe_nt8(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_pipe<8, 128, 4>(p, smem_limit - moe::kPipeStaticSmemReserve, stream);
}
}  // namespace k2k
