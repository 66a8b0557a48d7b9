// Bulk-copy decode kernel, 8 tokens per pass, K step 512, 2 or 3 stages (moe_gemm_bulk.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_bulk.cuh"

namespace k2k {
using BulkCfg_nt1_s2 = moe::BulkCfg<1, 2>;
using BulkCfg_nt1_s3 = moe::BulkCfg<1, 3>;
K2K_SMEM_BUDGET(moe_gemm_bulk_nt1_s2, BulkCfg_nt1_s2::kSmemBytes + moe::kBulkStaticSmemReserve);
K2K_SMEM_BUDGET(moe_gemm_bulk_nt1_s3, BulkCfg_nt1_s3::kSmemBytes + moe::kBulkStaticSmemReserve);
bool launch_moe_gemm_bulk_nt1(const MoeGemmParams& p, int stages, int smem_limit, cudaStream_t stream) {
  const int limit = smem_limit - moe::kBulkStaticSmemReserve;
  return stages == 3 ? moe::launch_bulk<1, 3>(p, limit, stream) : moe::launch_bulk<1, 2>(p, limit, stream);
}
}  // namespace k2k
