// Persistent streaming kernel, 16 tokens per pass, K step 256, 4 stages (moe_gemm_persist.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_persist.cuh"

namespace k2k {
using PersistCfg_nt2 = moe::PipeCfg<2, 256, 4, moe::kPersistWarps>;
K2K_SMEM_BUDGET(moe_gemm_persist_nt2, PersistCfg_nt2::kSmemBytes + moe::kPersistStaticSmemReserve);
bool launch_moe_gemm_persist_nt2(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_persist<2, 256, 4>(p, smem_limit - moe::kPersistStaticSmemReserve, stream);
}
}  // namespace k2k
