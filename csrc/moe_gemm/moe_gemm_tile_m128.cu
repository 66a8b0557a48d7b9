// Prefill tile kernel, 128 tokens x 128 weight rows per CTA, 3 stages (moe_gemm_tile.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_tile.cuh"

namespace k2k {
K2K_SMEM_BUDGET(moe_gemm_tile_m128, (moe::TileCfg<128, 3>::kSmemBytes + moe::kTileStaticSmemReserve));
bool launch_moe_gemm_tile_m128(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_tile<128, 3>(p, smem_limit - moe::kTileStaticSmemReserve, stream);
}
}  // namespace k2k
