// Instantiation unit of the FP8-KV attention kernel for D_qk = 576, 256 output channels per CTA.
#include "attention/fp8_attention_kernel.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d576_dvc256, (Cfg<576, 256>::kSmemBytes));
cudaError_t launch_d576(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<576, 256>(p, n_ctas, stream);
}
}  // namespace attn
}  // namespace k2k
