// What the two prefill kernels share (mma.sync: fp8_attention_prefill.cuh; wgmma on sm_90a:
// fp8_attention_prefill_wgmma.cuh): the CTA's work unit, the keys a row tile reads, the loads of one
// K/V chunk, and the write of one finished row.
#pragma once
#include "attention/fp8_attention_kernel.cuh"

namespace k2k {
namespace attn {

// One CTA = a first row tile (it loops over further tiles p.row_tiles apart), a key-range split, a KV
// head and a sequence; rows are (token, head) pairs of the KV head's group, token-major.
struct PrefillCta {
  int tile0, split, h, q_start, q_len, L, G, n_rows;
  const int32_t* bt_row;
  float sl2, vscale;                                 // exponent scale (k_scale folded in), v_scale
  int64_t k_slot_stride;
  const uint8_t* k_head;
  const uint8_t* v_head;
};

// False when the sequence has no query rows (or cu_seqlens_q is out of range): the CTA exits.
template <int D>
__device__ __forceinline__ bool prefill_cta(const Fp8AttnParams& p, PrefillCta& c) {
  int64_t idx = blockIdx.x;                          // dv_chunks == 1 here
  // Heaviest row tiles first: under a causal mask the last tiles see the most keys, and launched last
  // they would form the grid's tail.
  c.tile0 = p.row_tiles - 1 - int(idx % p.row_tiles);
  idx /= p.row_tiles;
  c.split = int(idx % p.num_splits);
  idx /= p.num_splits;
  c.h = int(idx % p.Hkv);
  const int b = int(idx / p.Hkv);
  c.q_start = __ldg(p.cu_seqlens_q + b);
  c.q_len = __ldg(p.cu_seqlens_q + b + 1) - c.q_start;
  if (c.q_len <= 0 || c.q_start < 0 || c.q_start + c.q_len > p.Tq) return false;
  c.L = min(max(__ldg(p.seq_lens + b), 0), p.max_pages * p.page_size);
  c.G = p.group;
  c.n_rows = c.q_len * c.G;
  c.bt_row = p.block_table + int64_t(b) * p.max_pages;
  c.sl2 = p.softmax_scale_log2 * __ldg(p.k_scale + (p.k_per_head ? c.h : 0));
  c.vscale = __ldg(p.v_scale + (p.v_per_head ? c.h : 0));
  c.k_slot_stride = int64_t(p.Hkv) * D;
  c.k_head = p.k_cache + int64_t(c.h) * D;
  c.v_head = p.v_cache + int64_t(c.h) * p.v_head_stride;
  return true;
}

// Keys of the row tile starting at row0 (rows_cta rows): [key_begin, key_end), loaded in chunks of
// `keys` from kbase (key_begin on the 16-key grid); this split's chunks are [c_begin, c_end). Rows are
// token-major, so the tile's first row starts its window earliest and its last row ends last.
struct PrefillKeys {
  int key_begin, key_end, kbase, c_begin, c_end;
};
__device__ __forceinline__ PrefillKeys prefill_keys(const Fp8AttnParams& p, const PrefillCta& c, int row0, int rows_cta,
                                                    int keys) {
  PrefillKeys k;
  k.key_end = c.L;
  if (p.causal) k.key_end = min(c.L, c.L - c.q_len + (min(row0 + rows_cta, c.n_rows) - 1) / c.G + 1);
  k.key_end = max(k.key_end, 0);
  k.key_begin = min(window_begin(c.L - c.q_len + row0 / c.G, p.window_left), k.key_end);
  k.kbase = k.key_begin & ~15;
  const int n_chunks = (k.key_end - k.kbase + keys - 1) / keys;
  const int per_split = (n_chunks + p.num_splits - 1) / p.num_splits;
  k.c_begin = min(n_chunks, c.split * per_split);
  k.c_end = min(n_chunks, k.c_begin + per_split);
  return k;
}

// This thread's 16-byte FP8 pieces of the chunk whose first key is key0: piece u = tid + i * kThreadsCta
// is key key0 + u / (D / 16), channels (u % (D / 16)) * 16 ..; keys outside [key_begin, key_end) are zero.
template <int D, int kLoads, int kThreadsCta>
__device__ __forceinline__ void prefill_load_chunk(const Fp8AttnParams& p, const PrefillCta& c, const PrefillKeys& k,
                                                   int key0, int tid, uint4 (&kr)[kLoads], uint4 (&vr)[kLoads]) {
#pragma unroll
  for (int i = 0; i < kLoads; ++i) {
    const int u = tid + i * kThreadsCta;
    const int key = key0 + u / (D / 16), col = (u % (D / 16)) * 16;
    if (key >= k.key_begin && key < k.key_end) {
      const int64_t slot = slot_of(p, c.bt_row, key);
      kr[i] = ld_stream16(c.k_head + slot * c.k_slot_stride + col);
      vr[i] = ld_stream16(c.v_head + slot * p.v_slot_stride + col);
    } else {
      kr[i] = make_uint4(0, 0, 0, 0);     // zero V: P is 0 there and 0 * (NaN garbage) would not be
      vr[i] = make_uint4(0, 0, 0, 0);
    }
  }
}

// Normalizes and writes row `row` (< n_rows) from this lane's channels 8j + 2t, +1 (o(j, 0), o(j, 1)),
// j < D / 8, its log2-domain maximum m and its full sum lsum: bf16 output (and the natural-log LSE if
// asked), or with key splits the normalized fp32 partial and its log2 LSE for the merge.
template <int D, typename O>
__device__ __forceinline__ void prefill_write_row(const Fp8AttnParams& p, const PrefillCta& c, int row, int t, float m,
                                                  float lsum, O o) {
  const float f = lsum > 0.f ? c.vscale / lsum : 0.f;
  const float lse2 = lsum > 0.f ? m + __log2f(lsum) : -INFINITY;   // log2 domain
  const int qi = row / c.G, hh = row - qi * c.G;
  const int64_t orow_index = int64_t(c.q_start + qi) * p.Hq + c.h * c.G + hh;
  if (p.num_splits > 1) {                            // normalized partial O and LSE for the merge
    const int64_t prow = int64_t(c.split) * p.Tq * p.Hq + orow_index;
    float* po = p.part_o + prow * p.DV;
    if (t == 0) p.part_lse[prow] = lse2;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) *reinterpret_cast<float2*>(po + j * 8 + 2 * t) = make_float2(o(j, 0) * f, o(j, 1) * f);
    return;
  }
  __nv_bfloat16* orow = p.out + orow_index * p.DV;
  if (p.lse != nullptr && t == 0) p.lse[orow_index] = lse2 * kLn2;
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
    *reinterpret_cast<__nv_bfloat162*>(orow + j * 8 + 2 * t) = __floats2bfloat162_rn(o(j, 0) * f, o(j, 1) * f);
}

// Launch one of the prefill kernels on n_ctas CTAs with smem bytes of dynamic shared memory (the
// opt-in raised first where it is over the default 48 KB).
template <typename Kernel>
cudaError_t launch_prefill_kernel(Kernel kernel, int64_t n_ctas, int threads, int smem, const Fp8AttnParams& p,
                                  cudaStream_t stream) {
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
  }
  kernel<<<dim3(static_cast<unsigned>(n_ctas)), threads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace attn
}  // namespace k2k
