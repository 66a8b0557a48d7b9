// Persistent streaming kernel, 8 tokens per pass, K step 256, 4 stages (moe_gemm_persist.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_persist.cuh"

namespace k2k {
using PersistCfg_nt1 = moe::PipeCfg<1, 256, 4, moe::kPersistWarps>;
K2K_SMEM_BUDGET(moe_gemm_persist_nt1, PersistCfg_nt1::kSmemBytes + moe::kPersistStaticSmemReserve);
bool launch_moe_gemm_persist_nt1(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_persist<1, 256, 4>(p, smem_limit - moe::kPersistStaticSmemReserve, stream);
}
}  // namespace k2k
