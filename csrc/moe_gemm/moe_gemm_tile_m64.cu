// Prefill tile kernel, 64 tokens x 128 weight rows per CTA, 4 stages (moe_gemm_tile.cuh).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_tile.cuh"

namespace k2k {
K2K_SMEM_BUDGET(moe_gemm_tile_m64, (moe::TileCfg<64, 4>::kSmemBytes + moe::kTileStaticSmemReserve));
bool launch_moe_gemm_tile_m64(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_tile<64, 4>(p, smem_limit - moe::kTileStaticSmemReserve, stream);
}
}  // namespace k2k
