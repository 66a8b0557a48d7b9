// Instantiation unit of the FP8-KV attention kernels for D_qk = 576, 256 output channels per CTA
// (both layouts: 16-row tiles, and the rows8 decode layout for GQA groups <= 8).
#include "attention/fp8_attention_rows8.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d576_dvc256, (Cfg<576, 256>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_rows8_d576_dvc256, (Cfg8<576, 256>::kSmemBytes));
cudaError_t launch_d576(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<576, 256>(p, n_ctas, stream);
}
int ctas_per_sm_d576(bool rows8) { return ctas_per_sm<576, 256>(rows8); }
}  // namespace attn
}  // namespace k2k
