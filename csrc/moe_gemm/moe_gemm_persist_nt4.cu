// Persistent streaming kernel, 32 tokens per pass, K step 256, 3 stages (moe_gemm_persist.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_persist.cuh"

namespace k2k {
using PersistCfg_nt4 = moe::PipeCfg<4, 256, 3, moe::kPersistWarps>;
K2K_SMEM_BUDGET(moe_gemm_persist_nt4, PersistCfg_nt4::kSmemBytes + moe::kPersistStaticSmemReserve);
bool launch_moe_gemm_persist_nt4(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_persist<4, 256, 3>(p, smem_limit - moe::kPersistStaticSmemReserve, stream);
}
}  // namespace k2k
