// Persistent streaming kernel, 8 tokens per pass, K step 256, 3 stages, compiled for 5 CTAs per SM
// (<= 102 registers): more resident warps than the default nt1 config (4 CTAs), fewer stages each.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_persist.cuh"

namespace k2k {
using PersistCfg_nt1s3 = moe::PipeCfg<1, 256, 3, moe::kPersistWarps>;
K2K_SMEM_BUDGET(moe_gemm_persist_nt1s3, PersistCfg_nt1s3::kSmemBytes + moe::kPersistStaticSmemReserve);
bool launch_moe_gemm_persist_nt1s3(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_persist<1, 256, 3, 5>(p, smem_limit - moe::kPersistStaticSmemReserve, stream);
}
}  // namespace k2k
