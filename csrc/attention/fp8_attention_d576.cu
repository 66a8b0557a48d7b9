// Instantiation unit of the FP8-KV attention kernels for D_qk = 576, 256 output channels per CTA
// (16-row tiles, rows8, and the 8-warp MLA-latent decode layout).
#include "attention/fp8_attention_latent.cuh"
#include "attention/fp8_attention_rows8.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d576_dvc256, (Cfg<576, 256>::kSmemBytes));
K2K_SMEM_BUDGET(fp8_attention_rows8_d576_dvc256, (Cfg8<576, 256>::kSmemBytes));
cudaError_t launch_d576(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<576, 256>(p, n_ctas, stream);
}
K2K_SMEM_BUDGET(fp8_attention_latent_d576_dv512, (CfgL::kSmemBytes));
cudaError_t launch_latent_d576(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_latent(p, n_ctas, stream);
}
int ctas_per_sm_latent() {
  int n = 0;
  cudaFuncSetAttribute(fp8_attention_latent_kernel<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, CfgL::kSmemBytes);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fp8_attention_latent_kernel<0>, CfgL::kThreadsL, CfgL::kSmemBytes);
  return n > 0 ? n : 1;
}
int ctas_per_sm_d576(bool rows8) { return ctas_per_sm<576, 256>(rows8); }
}  // namespace attn
}  // namespace k2k
