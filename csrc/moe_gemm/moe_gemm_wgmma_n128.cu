// wgmma prefill kernel (sm_90a), 128 tokens x 128 weight rows (2 warpgroups) per CTA, 4 stages of 64 K
// (moe_gemm_wgmma.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_wgmma.cuh"

namespace k2k {
using WgmmaCfg_n128 = moe::WgmmaCfg<128, 4>;
K2K_SMEM_BUDGET(moe_gemm_wgmma_n128, WgmmaCfg_n128::kSmemBytes + moe::kWgStaticSmemReserve);
bool launch_moe_gemm_wgmma_n128(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_wgmma<128, 4>(p, smem_limit - moe::kWgStaticSmemReserve, stream);
}
}  // namespace k2k
