// Instantiation unit of the FP8-KV attention kernel for D_qk = 128, 128 output channels per CTA.
#include "attention/fp8_attention_kernel.cuh"
#include "common/smem_budget.h"

namespace k2k {
namespace attn {
K2K_SMEM_BUDGET(fp8_attention_d128_dvc128, (Cfg<128, 128>::kSmemBytes));
cudaError_t launch_d128(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  return launch_config<128, 128>(p, n_ctas, stream);
}
}  // namespace attn
}  // namespace k2k
