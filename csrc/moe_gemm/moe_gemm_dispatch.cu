// Config dispatch (one instantiation unit per config: moe_gemm_bulk_t*.cu, moe_gemm_persist_nt*.cu,
// moe_gemm_pipe_nt*.cu, moe_gemm_tile_m*.cu, moe_gemm_wgmma_n*.cu).
#include "moe_gemm/moe_gemm.h"

namespace k2k {
bool launch_moe_gemm_pipe_nt1(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_pipe_nt2(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_pipe_nt4(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_pipe_nt8(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_persist_nt1(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_persist_nt2(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_persist_nt4(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_tile_m64(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_tile_m128(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_bulk_t4(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_bulk_t8(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_wgmma_n64(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_wgmma_n96(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);
bool launch_moe_gemm_wgmma_n128(const MoeGemmParams& p, int smem_limit, cudaStream_t stream);

bool launch_moe_gemm_wgmma(const MoeGemmParams& p, int tokens, int smem_limit, cudaStream_t stream) {
  if (tokens == 64) return launch_moe_gemm_wgmma_n64(p, smem_limit, stream);
  if (tokens == 96) return launch_moe_gemm_wgmma_n96(p, smem_limit, stream);
  return launch_moe_gemm_wgmma_n128(p, smem_limit, stream);
}

bool launch_moe_gemm_bulk(const MoeGemmParams& p, int tokens, int smem_limit, cudaStream_t stream) {
  return tokens == 4 ? launch_moe_gemm_bulk_t4(p, smem_limit, stream) : launch_moe_gemm_bulk_t8(p, smem_limit, stream);
}

bool launch_moe_gemm_tile(const MoeGemmParams& p, int bm, int smem_limit, cudaStream_t stream) {
  return bm == 64 ? launch_moe_gemm_tile_m64(p, smem_limit, stream) : launch_moe_gemm_tile_m128(p, smem_limit, stream);
}

bool launch_moe_gemm_stream(const MoeGemmParams& p, int nt, int variant, int smem_limit, cudaStream_t stream) {
  if (variant == kStreamPersist && nt <= 4) {
    switch (nt) {
      case 1: return launch_moe_gemm_persist_nt1(p, smem_limit, stream);
      case 2: return launch_moe_gemm_persist_nt2(p, smem_limit, stream);
      default: return launch_moe_gemm_persist_nt4(p, smem_limit, stream);
    }
  }
  switch (nt) {
    case 1: return launch_moe_gemm_pipe_nt1(p, smem_limit, stream);
    case 2: return launch_moe_gemm_pipe_nt2(p, smem_limit, stream);
    case 4: return launch_moe_gemm_pipe_nt4(p, smem_limit, stream);
    default: return launch_moe_gemm_pipe_nt8(p, smem_limit, stream);
  }
}
}  // namespace k2k
