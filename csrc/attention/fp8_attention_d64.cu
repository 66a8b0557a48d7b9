// Instantiation unit of the FP8-KV attention kernels for D_qk = 64, 64 output channels per CTA
// (all layouts: 16-row tiles, rows8 decode for GQA groups <= 8, and the prefill layout, 64- and 128-row CTAs).
#include "attention/fp8_attention_prefill.cuh"
#include "attention/fp8_attention_rows8.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d64_dvc64, (Cfg<64, 64>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_rows8_d64_dvc64, (Cfg8<64, 64>::kSmemBytes));
cudaError_t launch_d64(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<64, 64>(p, n_ctas, stream);
}
K2K_SMEM_BUDGET(fp8_attention_prefill_d64_m1, (CfgP<64, 1>::kSmemBytes));   // also the warp-split (2, 4) ones: same tiles
K2K_SMEM_BUDGET(fp8_attention_prefill_d64_m2, (CfgP<64, 2>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_prefill_wgmma_d64_k64, (CfgW<64, 64>::kSmemBytes));   // sm_90a kernel
K2K_SMEM_BUDGET(fp8_attention_prefill_wgmma_d64_k128, (CfgW<64, 128>::kSmemBytes));   // sm_90a kernel
cudaError_t launch_prefill_d64(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_prefill<64>(p, n_ctas, stream);
}
int ctas_per_sm_d64(bool rows8) { return ctas_per_sm<64, 64>(rows8); }
int ctas_per_sm_prefill_d64(int m_tiles, int warp_split) { return ctas_per_sm_prefill<64>(m_tiles, warp_split); }
}  // namespace attn
}  // namespace k2k
