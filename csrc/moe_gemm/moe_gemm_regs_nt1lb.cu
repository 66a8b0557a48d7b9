// Register-streaming kernel, 8-token passes, compiled for 4 CTAs per SM (<= 128 registers) so T = 1's
// 512 CTAs fit in one wave on a 132-SM H200. Selected by K2K_MOE_GEMM_CFG=nt1lb (compiled, not measured).
#include "common/smem_budget.h"
#include "moe_gemm/moe_gemm_regs.cuh"

namespace k2k {
K2K_SMEM_BUDGET(moe_gemm_regs_nt1lb, moe::stream_smem_bytes<1>() + moe::kStreamStaticSmemReserve);
bool launch_moe_gemm_regs_nt1lb(const MoeGemmParams& p, int smem_limit, cudaStream_t stream) {
  return moe::launch_regs_mb<1, 4>(p, smem_limit - moe::kStreamStaticSmemReserve, stream);
}
}  // namespace k2k
