// Instantiation unit of the FP8-KV attention kernels for D_qk = 256, 128 output channels per CTA
// (both layouts: 16-row tiles, and the rows8 decode layout for GQA groups <= 8).
#include "attention/fp8_attention_rows8.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d256_dvc128, (Cfg<256, 128>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_rows8_d256_dvc128, (Cfg8<256, 128>::kSmemBytes));
cudaError_t launch_d256(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<256, 128>(p, n_ctas, stream);
}
int ctas_per_sm_d256(bool rows8) { return ctas_per_sm<256, 128>(rows8); }
}  // namespace attn
}  // namespace k2k
