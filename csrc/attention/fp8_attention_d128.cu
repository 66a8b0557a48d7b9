// Instantiation unit of the FP8-KV attention kernels for D_qk = 128, 128 output channels per CTA
// (all layouts: 16-row tiles, rows8 decode for GQA groups <= 8, and the prefill layout, 64- and 128-row CTAs).
#include "attention/fp8_attention_prefill.cuh"
#include "attention/fp8_attention_rows8.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d128_dvc128, (Cfg<128, 128>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_rows8_d128_dvc128, (Cfg8<128, 128>::kSmemBytes));
cudaError_t launch_d128(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<128, 128>(p, n_ctas, stream);
}
K2K_SMEM_BUDGET(fp8_attention_prefill_d128_m1, (CfgP<128, 1>::kSmemBytes));   // also the warp-split (2, 4) ones: same tiles
K2K_SMEM_BUDGET(fp8_attention_prefill_d128_m2, (CfgP<128, 2>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_prefill_wgmma_d128_k64, (CfgW<128, 64>::kSmemBytes));   // sm_90a kernel
K2K_SMEM_BUDGET(fp8_attention_prefill_wgmma_d128_k96, (CfgW<128, 96>::kSmemBytes));   // sm_90a kernel
cudaError_t launch_prefill_d128(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_prefill<128>(p, n_ctas, stream);
}
int ctas_per_sm_d128(bool rows8) { return ctas_per_sm<128, 128>(rows8); }
int ctas_per_sm_prefill_d128(int m_tiles, int warp_split) { return ctas_per_sm_prefill<128>(m_tiles, warp_split); }
}  // namespace attn
}  // namespace k2k
