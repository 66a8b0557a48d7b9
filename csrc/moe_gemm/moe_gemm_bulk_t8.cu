// Bulk-copy decode kernel, 8 tokens per pass, K step 512, 2 stages (moe_gemm_bulk.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_bulk.cuh"

namespace k2k {
using BulkCfg_t8 = moe::BulkCfg<8, 2>;
K2K_SMEM_BUDGET(moe_gemm_bulk_t8, BulkCfg_t8::kSmemBytes + moe::kBulkStaticSmemReserve);
bool launch_moe_gemm_bulk_t8(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_bulk<8, 2>(p, smem_limit - moe::kBulkStaticSmemReserve, stream);
}
}  // namespace k2k
