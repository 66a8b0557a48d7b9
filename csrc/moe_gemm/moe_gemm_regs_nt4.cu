// Register-streaming kernel (first version, kept for comparison: K2K_MOE_GEMM_KERNEL=regs), kNT = 4.
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_regs.cuh"

namespace k2k {
K2K_SMEM_BUDGET(moe_gemm_regs_nt4, moe::stream_smem_bytes<4>() + moe::kStreamStaticSmemReserve);
bool launch_moe_gemm_regs_nt4(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_regs<4>(p, smem_limit - moe::kStreamStaticSmemReserve, stream);
}
}  // namespace k2k
