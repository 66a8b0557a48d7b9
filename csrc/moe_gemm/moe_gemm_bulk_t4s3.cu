// Bulk-copy decode kernel, 4 tokens per pass, K step 512, 3 stages (moe_gemm_bulk.cuh): one stage more
// in flight per CTA, one CTA fewer per SM than the 2-stage configs (K2K_MOE_GEMM_CFG=t4s3).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_bulk.cuh"

namespace k2k {
using BulkCfg_t4s3 = moe::BulkCfg<4, 3>;
K2K_SMEM_BUDGET(moe_gemm_bulk_t4s3, BulkCfg_t4s3::kSmemBytes + moe::kBulkStaticSmemReserve);
bool launch_moe_gemm_bulk_t4s3(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_bulk<4, 3>(p, smem_limit - moe::kBulkStaticSmemReserve, stream);
}
}  // namespace k2k
