// Dispatch of fp8_kv_attention over the compiled (D_qk, DV-chunk) configurations + the split merge.
#include "attention/fp8_attention.h"

#include <algorithm>
#include "attention/fp8_attention_latent.cuh"
#include "attention/fp8_attention_prefill.cuh"
#include "attention/fp8_attention_rows8.cuh"

namespace k2k {

namespace attn {
cudaError_t launch_d64(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
cudaError_t launch_d128(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
cudaError_t launch_d256(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
cudaError_t launch_d576(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
cudaError_t launch_prefill_d64(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
cudaError_t launch_prefill_d128(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
cudaError_t launch_latent_d576(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream);
int ctas_per_sm_latent();
int ctas_per_sm_d64(bool rows8);
int ctas_per_sm_d128(bool rows8);
int ctas_per_sm_d256(bool rows8);
int ctas_per_sm_d576(bool rows8);
int ctas_per_sm_prefill_d64(int m_tiles, int warp_split);
int ctas_per_sm_prefill_d128(int m_tiles, int warp_split);
}  // namespace attn

cudaError_t launch_fp8_attention_merge(const float* part_o, const float* part_lse, __nv_bfloat16* out, float* lse, int splits,
                                       int64_t rows, int DV, cudaStream_t stream);

namespace {
// Keep in sync with the instantiation units fp8_attention_d<D>.cu and Cfg<D, DVC>::kSmemBytes in
// fp8_attention_kernel.cuh (asserted there through K2K_SMEM_BUDGET).
int dv_chunk_of(int D) {
  switch (D) {
    case 64: return 64;
    case 128: return 128;
    case 256: return 128;   // O of 256 channels would not fit the registers next to the K/V loads
    case 576: return 256;   // MLA latent (DV 512): two chunks, QK recomputed twice
    default: return 0;
  }
}
int smem_of(int D) {
  switch (D) {
    case 64: return std::max({attn::Cfg<64, 64>::kSmemBytes, attn::Cfg8<64, 64>::kSmemBytes, attn::CfgP<64, 1>::kSmemBytes,
                                 attn::CfgP<64, 2>::kSmemBytes});
    case 128: return std::max({attn::Cfg<128, 128>::kSmemBytes, attn::Cfg8<128, 128>::kSmemBytes, attn::CfgP<128, 1>::kSmemBytes,
                                 attn::CfgP<128, 2>::kSmemBytes});
    case 256: return std::max(attn::Cfg<256, 128>::kSmemBytes, attn::Cfg8<256, 128>::kSmemBytes);
    case 576: return std::max({attn::Cfg<576, 256>::kSmemBytes, attn::Cfg8<576, 256>::kSmemBytes, attn::CfgL::kSmemBytes});
    default: return 0;
  }
}
}  // namespace

int fp8_attention_dv_chunk(int D, int DV) {
  const int c = dv_chunk_of(D);
  return (c > 0 && DV >= c && DV % c == 0 && DV <= D) ? c : 0;
}

bool fp8_attention_supported(int D, int DV) { return fp8_attention_dv_chunk(D, DV) > 0; }

int fp8_attention_smem_bytes(int D, int DV) {
  const int c = fp8_attention_dv_chunk(D, DV);
  return c ? smem_of(D) : 0;
}

bool fp8_attention_prefill_supported(int D, int DV) { return (D == 64 || D == 128) && DV == D; }

int fp8_attention_prefill_wgmma_smem_bytes(int D, int DV, int keys) {
  if (DV != D) return 0;
  if (D == 128 && keys == 64) return attn::CfgW<128, 64>::kSmemBytes;
  if (D == 128 && keys == 96) return attn::CfgW<128, 96>::kSmemBytes;
  if (D == 64 && keys == 64) return attn::CfgW<64, 64>::kSmemBytes;
  if (D == 64 && keys == 128) return attn::CfgW<64, 128>::kSmemBytes;
  return 0;
}

bool fp8_attention_latent_supported(int D, int DV) { return D == 576 && DV == 512; }

int fp8_attention_latent_ctas_per_sm(int device) {
  static int cache[16] = {};
  if (device < 0 || device >= 16) device = 0;
  if (cache[device] == 0) cache[device] = attn::ctas_per_sm_latent();
  return cache[device];
}

int fp8_attention_ctas_per_sm(int D, int layout, int device) {
  // Cached per (device, D, layout): the occupancy query is host-only but not free.
  static int cache[16][4][kLayoutCount] = {};
  const int di = D == 64 ? 0 : D == 128 ? 1 : D == 256 ? 2 : 3;
  if (device < 0 || device >= 16) device = 0;
  if (layout < 0 || layout >= kLayoutCount) layout = kLayoutRows16;
  int& slot = cache[device][di][layout];
  if (slot == 0) {
    const bool rows8 = layout == kLayoutRows8;
    if (layout >= kLayoutPrefill64) {
      const int m_tiles = layout == kLayoutPrefill128 ? 2 : 1;
      const int warp_split = layout == kLayoutPrefill16 ? 4 : layout == kLayoutPrefill32 ? 2 : 1;
      slot = D == 64 ? attn::ctas_per_sm_prefill_d64(m_tiles, warp_split)
                     : attn::ctas_per_sm_prefill_d128(m_tiles, warp_split);
    } else {
      switch (D) {
        case 64: slot = attn::ctas_per_sm_d64(rows8); break;
        case 128: slot = attn::ctas_per_sm_d128(rows8); break;
        case 256: slot = attn::ctas_per_sm_d256(rows8); break;
        default: slot = attn::ctas_per_sm_d576(rows8); break;
      }
    }
  }
  return slot;
}

cudaError_t launch_fp8_attention(const Fp8AttnParams& p, cudaStream_t stream) {
  const int64_t n_ctas = int64_t(p.B) * p.Hkv * p.num_splits * p.row_tiles * p.dv_chunks;
  if (n_ctas == 0 || p.Tq == 0) return cudaSuccess;
  cudaError_t e;
  if (p.latent) {
    if (p.D != 576 || p.DV != 512) return cudaErrorInvalidValue;
    e = attn::launch_latent_d576(p, n_ctas, stream);
  } else if (p.prefill) {
    switch (p.D) {
      case 64: e = attn::launch_prefill_d64(p, n_ctas, stream); break;
      case 128: e = attn::launch_prefill_d128(p, n_ctas, stream); break;
      default: return cudaErrorInvalidValue;
    }
  } else {
    switch (p.D) {
      case 64: e = attn::launch_d64(p, n_ctas, stream); break;
      case 128: e = attn::launch_d128(p, n_ctas, stream); break;
      case 256: e = attn::launch_d256(p, n_ctas, stream); break;
      case 576: e = attn::launch_d576(p, n_ctas, stream); break;
      default: return cudaErrorInvalidValue;
    }
  }
  if (e != cudaSuccess || p.num_splits == 1) return e;   // one split wrote the output directly
  // every layout: split partials -> one merge pass
  return launch_fp8_attention_merge(p.part_o, p.part_lse, p.out, p.lse, p.num_splits, int64_t(p.Tq) * p.Hq, p.DV, stream);
}

}  // namespace k2k
