// wgmma prefill kernel (sm_90a), 96 tokens x 128 weight rows (2 warpgroups) per CTA, 4 stages of 64 K
// (moe_gemm_wgmma.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_wgmma.cuh"

namespace k2k {
using WgmmaCfg_n96 = moe::WgmmaCfg<96, 4>;
K2K_SMEM_BUDGET(moe_gemm_wgmma_n96, WgmmaCfg_n96::kSmemBytes + moe::kWgStaticSmemReserve);
bool launch_moe_gemm_wgmma_n96(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_wgmma<96, 4>(p, smem_limit - moe::kWgStaticSmemReserve, stream);
}
}  // namespace k2k
