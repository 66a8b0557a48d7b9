// MLA-latent decode layout (default for decode with >= 8 sequences, K2K_ATTN_LATENT=0|1 forces; D_qk 576,
// D_v 512 = first 512 channels of K).
// One CTA of 8 warps = 64 (token, head) rows of one sequence, one key-range split; per step of 128 keys:
//   A. warp w computes S^T = K Q^T for keys [16w, 16w + 16) x all 64 rows (keys in the MMA M dim,
//      rows in N, as in rows8): each K byte is loaded and converted ONCE per CTA (the 16-row layout
//      re-converts it for every 16 heads and every DV chunk).
//   B. row maxima of the 8 warps meet in shared memory; every warp rescales with the same running max,
//      writes its P^T block as P[row][key] (f16, via movmatrix) to shared memory.
//   C. warp w computes O^T[channels 64w .. 64w + 63][64 rows] += V^T P^T over the 128 keys: V = the
//      first 512 channels of the same K rows (read again, from L1/L2), P from shared memory (ldmatrix).
// Two __syncthreads per step. Registers: O^T 128 floats / thread. Shared memory: Q 74.8 KB (f16),
// P 17.4 KB, row statistics 4.5 KB: 96.8 KB <= 101 376 B.
#pragma once
#include "attention/fp8_attention_prefill.cuh"
#include "attention/fp8_attention_rows8.cuh"

namespace k2k {
namespace attn {

struct CfgL {
  static constexpr int D = 576, DV = 512;
  static constexpr int kWarpsL = 8, kThreadsL = kWarpsL * 32;
  static constexpr int kRowsL = 64;                     // rows per CTA = N of the MMAs (8 n-tiles)
  static constexpr int kKeysL = kWarpsL * 16;           // keys per step
  static constexpr int kQStride = D + 8;                // f16; +16 B: conflict-free 16-byte reads
  static constexpr int kPStride = kKeysL + 8;           // f16 per P row; +16 B: conflict-free ldmatrix
  static constexpr int kBlocks = D / 64;
  static constexpr int kKRing = 2;                      // K blocks in flight per thread
  static constexpr int kQBytes = kRowsL * kQStride * 2;
  static constexpr int kPBytes = kRowsL * kPStride * 2;
  static constexpr int kSmemBytes = kQBytes + kPBytes + 2 * kWarpsL * kRowsL * 4 + 2 * kRowsL * 4;
};

template <int kUnused = 0>
__global__ void __launch_bounds__(CfgL::kThreadsL, 1) fp8_attention_latent_kernel(const Fp8AttnParams p) {
  using C = CfgL;
  extern __shared__ __align__(16) uint8_t smem[];
  __half* q_s = reinterpret_cast<__half*>(smem);                          // [64 rows][kQStride]
  __half* p_s = reinterpret_cast<__half*>(smem + C::kQBytes);             // [64 rows][kPStride]
  float* red_m = reinterpret_cast<float*>(smem + C::kQBytes + C::kPBytes);  // [8 warps][64 rows]
  float* red_l = red_m + C::kWarpsL * C::kRowsL;                         // [8 warps][64 rows]
  float* m_s = red_l + C::kWarpsL * C::kRowsL;   // running row max, [2][64]: read [st & 1], write [(st + 1) & 1]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  int64_t idx = blockIdx.x;                              // dv_chunks == 1
  const int tile0 = int(idx % p.row_tiles);
  idx /= p.row_tiles;
  const int split = int(idx % p.num_splits);
  idx /= p.num_splits;
  const int h = int(idx % p.Hkv);
  const int b = int(idx / p.Hkv);
  const int q_start = __ldg(p.cu_seqlens_q + b);
  const int q_len = __ldg(p.cu_seqlens_q + b + 1) - q_start;
  if (q_len <= 0 || q_start < 0 || q_start + q_len > p.Tq) return;
  const int L = min(max(__ldg(p.seq_lens + b), 0), p.max_pages * p.page_size);
  const int G = p.group;
  const int n_rows = q_len * G;
  const int32_t* bt_row = p.block_table + int64_t(b) * p.max_pages;
  const float sl2 = p.softmax_scale_log2 * __ldg(p.k_scale + (p.k_per_head ? h : 0));
  const float vscale = __ldg(p.v_scale + (p.v_per_head ? h : 0));
  const int64_t slot_stride = int64_t(p.Hkv) * C::D;
  const uint8_t* k_head = p.k_cache + int64_t(h) * C::D;
  const uint8_t* v_head = p.v_cache + int64_t(h) * p.v_head_stride + warp * 64 + g * 8;   // this warp's channels

  for (int tile = tile0; tile * C::kRowsL < n_rows; tile += p.row_tiles) {
    const int row0 = tile * C::kRowsL;
    __syncthreads();
    for (int i = threadIdx.x; i < C::kRowsL * (C::D / 8); i += C::kThreadsL) {
      const int r = i / (C::D / 8), cc = i % (C::D / 8), row = row0 + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < n_rows) {
        const int qi = row / G, hh = row - qi * G;
        v = __ldg(reinterpret_cast<const uint4*>(p.q + (int64_t(q_start + qi) * p.Hq + h * G + hh) * C::D) + cc);
      }
      v = make_uint4(bf16x2_to_f16x2_clamped(v.x), bf16x2_to_f16x2_clamped(v.y), bf16x2_to_f16x2_clamped(v.z),
                     bf16x2_to_f16x2_clamped(v.w));
      *reinterpret_cast<uint4*>(q_s + r * C::kQStride + cc * 8) = v;
    }
    __syncthreads();

    // this thread's rows in S^T / O^T: nt * 8 + 2t + e (nt = 0..7, e = 0..1); keys < row_lim(row) are
    // visible, and with a sliding window keys >= row_lim - 1 - window_left (key_visible)
    auto row_lim = [&](int rloc) {
      const int row = row0 + rloc;
      return row < n_rows ? (p.causal ? min(L, L - q_len + row / G + 1) : L) : 0;
    };
    int key_end = L;
    if (p.causal) key_end = min(L, L - q_len + (min(row0 + C::kRowsL, n_rows) - 1) / G + 1);
    key_end = max(key_end, 0);
    // Sliding window: steps start at the first row's window start on the 16-key grid (so a warp's 16
    // keys still share a page); keys before key_begin are neither loaded nor visible.
    const int key_begin = min(window_begin(L - q_len + row0 / G, p.window_left), key_end);
    const int kbase = key_begin & ~15;
    const unsigned n_keys = unsigned(key_end - key_begin);   // key in range <=> unsigned(key - key_begin) < n_keys
    const int n_steps_all = (key_end - kbase + C::kKeysL - 1) / C::kKeysL;
    const int per_split = (n_steps_all + p.num_splits - 1) / p.num_splits;
    const int st_begin = split * per_split;
    const int st_end = min(n_steps_all, st_begin + per_split);

    float o[4][8][4];      // [channel m-tile][row n-tile][c]: rows nt*8 + 2t + (e & 1), channel 2i + (e >> 1)
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) o[i][nt][0] = o[i][nt][1] = o[i][nt][2] = o[i][nt][3] = 0.f;
    float l[8][2];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) l[nt][0] = l[nt][1] = 0.f;
    // the running max lives in shared memory (same for every thread of a row; saves 16 registers)
    if (threadIdx.x < C::kRowsL) m_s[(st_begin & 1) * C::kRowsL + threadIdx.x] = -INFINITY;
    __syncthreads();

    for (int st = st_begin; st < st_end; ++st) {
      const int kb = kbase + st * C::kKeysL;
      // ---- A: S^T for keys kb + 16 warp + {g, g + 8}
      const int key0 = kb + warp * 16 + g;
      int64_t kslot[2];
      bool kvalid[2];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        kvalid[hf] = unsigned(key0 + hf * 8 - key_begin) < n_keys;
        kslot[hf] = slot_of(p, bt_row, min(key0 + hf * 8, key_end - 1));
      }
      uint4 kr[2][C::kKRing];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int blk = 0; blk < C::kKRing; ++blk)
          kr[hf][blk] = kvalid[hf] ? __ldg(reinterpret_cast<const uint4*>(k_head + kslot[hf] * slot_stride + blk * 64 + t * 16))
                                   : make_uint4(0, 0, 0, 0);
      float s[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int blk = 0; blk < C::kBlocks; ++blk) {
        uint4 kc[2];
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          kc[hf] = kr[hf][blk % C::kKRing];
          if (blk + C::kKRing < C::kBlocks)
            kr[hf][blk % C::kKRing] = kvalid[hf] ? __ldg(reinterpret_cast<const uint4*>(
                                                       k_head + kslot[hf] * slot_stride + (blk + C::kKRing) * 64 + t * 16))
                                                 : make_uint4(0, 0, 0, 0);
        }
        uint32_t a[4][4];   // A fragments of the 4 k-steps of this block (keys g, g + 8)
#pragma unroll
        for (int s4 = 0; s4 < 4; ++s4) {
          const uint32_t wg = s4 == 0 ? kc[0].x : s4 == 1 ? kc[0].y : s4 == 2 ? kc[0].z : kc[0].w;
          const uint32_t wg8 = s4 == 0 ? kc[1].x : s4 == 1 ? kc[1].y : s4 == 2 ? kc[1].z : kc[1].w;
          a[s4][0] = e4m3x2_to_f16x2(wg);
          a[s4][1] = e4m3x2_to_f16x2(wg8);
          a[s4][2] = e4m3x2_to_f16x2(wg >> 16);
          a[s4][3] = e4m3x2_to_f16x2(wg8 >> 16);
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          const __half* qrow = q_s + (nt * 8 + g) * C::kQStride + blk * 64 + t * 16;
          const uint4 qa = *reinterpret_cast<const uint4*>(qrow);
          const uint4 qb = *reinterpret_cast<const uint4*>(qrow + 8);
          mma_f16(s[nt], a[0][0], a[0][1], a[0][2], a[0][3], qa.x, qa.y);
          mma_f16(s[nt], a[1][0], a[1][1], a[1][2], a[1][3], qa.z, qa.w);
          mma_f16(s[nt], a[2][0], a[2][1], a[2][2], a[2][3], qb.x, qb.y);
          mma_f16(s[nt], a[3][0], a[3][1], a[3][2], a[3][3], qb.z, qb.w);
        }
      }
      // ---- B: masks, per-warp row max -> shared, common running max (same in every warp)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int lim = row_lim(nt * 8 + 2 * t + e);
          s[nt][e] = key_visible(key0, lim, p.window_left) ? s[nt][e] * sl2 : -INFINITY;
          s[nt][e + 2] = key_visible(key0 + 8, lim, p.window_left) ? s[nt][e + 2] * sl2 : -INFINITY;
          float v = fmaxf(s[nt][e], s[nt][e + 2]);
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 8));
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 16));
          if (g == 0) red_m[warp * C::kRowsL + nt * 8 + 2 * t + e] = v;
        }
      }
      __syncthreads();
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float m_old = m_s[(st & 1) * C::kRowsL + nt * 8 + 2 * t + e];
          float M = m_old;
#pragma unroll
          for (int w = 0; w < C::kWarpsL; ++w) M = fmaxf(M, red_m[w * C::kRowsL + nt * 8 + 2 * t + e]);
          const float base = M == -INFINITY ? 0.f : M;
          const float alpha = fast_exp2(m_old - base);
          if (warp == 0 && g == 0) m_s[((st + 1) & 1) * C::kRowsL + nt * 8 + 2 * t + e] = M;
          s[nt][e] = fast_exp2(s[nt][e] - base);
          s[nt][e + 2] = fast_exp2(s[nt][e + 2] - base);
          l[nt][e] = l[nt][e] * alpha + s[nt][e] + s[nt][e + 2];
          if (__any_sync(0xffffffffu, alpha != 1.f)) {   // the running max of some row moved
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              o[i][nt][e] *= alpha;
              o[i][nt][e + 2] *= alpha;
            }
          }
        }
      // P^T [key][row] halves -> P[row][key] (movmatrix) -> shared: row nt*8 + g, keys 16 warp + 2t (+8)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const uint32_t lo = movmatrix_trans(pack_f16x2(s[nt][0], s[nt][1]));
        const uint32_t hi = movmatrix_trans(pack_f16x2(s[nt][2], s[nt][3]));
        __half* prow = p_s + (nt * 8 + g) * C::kPStride + warp * 16 + 2 * t;
        *reinterpret_cast<uint32_t*>(prow) = lo;
        *reinterpret_cast<uint32_t*>(prow + 8) = hi;
      }
      __syncthreads();
      // ---- C: O^T[64 warp + ...] += V^T P^T over the step's 128 keys (8 k-steps of 16)
      const bool pages16 = (p.page_size & 15) == 0;
#pragma unroll 1
      for (int kk = 0; kk < C::kKeysL / 16; ++kk) {
        const int kq = kb + kk * 16;
        uint2 vv[4];
        int64_t base = pages16 && kq < key_end ? slot_of(p, bt_row, kq) : 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int key = kq + 2 * t + (i & 1) + (i >> 1) * 8;
          if (unsigned(key - key_begin) < n_keys) {
            const int64_t sl = pages16 ? base + (key - kq) : slot_of(p, bt_row, key);
            vv[i] = __ldg(reinterpret_cast<const uint2*>(v_head + sl * p.v_slot_stride));
          } else {
            vv[i] = make_uint2(0, 0);
          }
        }
        uint32_t bp[8][2];  // B fragments (P^T) of the 8 row n-tiles for this k-step
#pragma unroll
        for (int nt = 0; nt < 8; nt += 2) {
          uint32_t r4[4];
          // matrices: (rows nt*8.., keys kq..+7), (rows nt*8.., keys +8..), (rows (nt+1)*8.., keys ..), (.., +8)
          ldsm_x4(r4, p_s + (nt * 8 + (lane & 7) + (lane >> 4) * 8) * C::kPStride + kk * 16 + ((lane >> 3) & 1) * 8);
          bp[nt][0] = r4[0]; bp[nt][1] = r4[1]; bp[nt + 1][0] = r4[2]; bp[nt + 1][1] = r4[3];
        }
#pragma unroll
        for (int w = 0; w < 2; ++w) {
          const uint32_t va = w == 0 ? vv[0].x : vv[0].y, vb = w == 0 ? vv[1].x : vv[1].y;
          const uint32_t vc = w == 0 ? vv[2].x : vv[2].y, vd = w == 0 ? vv[3].x : vv[3].y;
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const uint32_t ab = __byte_perm(va, vb, half ? 0x7362 : 0x5140);
            const uint32_t cd = __byte_perm(vc, vd, half ? 0x7362 : 0x5140);
            const uint32_t a0 = e4m3x2_to_f16x2(ab), a1 = e4m3x2_to_f16x2(ab >> 16);
            const uint32_t a2 = e4m3x2_to_f16x2(cd), a3 = e4m3x2_to_f16x2(cd >> 16);
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) mma_f16(o[2 * w + half][nt], a0, a1, a2, a3, bp[nt][0], bp[nt][1]);
          }
        }
      }
    }

    // ---- finish: l summed over g and over warps (every warp used the same running max)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float v = l[nt][e];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        l[nt][e] = v;
      }
    __syncthreads();   // red_l aliases nothing, but red_m of the last step may still be read
    if (g == 0) {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) red_l[warp * C::kRowsL + nt * 8 + 2 * t + e] = l[nt][e];
    }
    __syncthreads();
    const bool direct = p.num_splits == 1;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int rloc = nt * 8 + 2 * t + e, row = row0 + rloc;
        float Ls = 0.f;
#pragma unroll
        for (int w = 0; w < C::kWarpsL; ++w) Ls += red_l[w * C::kRowsL + rloc];
        if (row >= n_rows) continue;
        const float f = Ls > 0.f ? vscale / Ls : 0.f;
        const int qi = row / G, hh = row - qi * G;
        const int64_t orow = int64_t(q_start + qi) * p.Hq + h * G + hh;
        // channels 64 warp + g*8 + 2i + c, i = 0..3, c = 0..1: 8 contiguous
        float v[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          v[2 * i] = o[i][nt][e] * f;
          v[2 * i + 1] = o[i][nt][e + 2] * f;
        }
        const int64_t col = warp * 64 + g * 8;
        if (direct) {
          uint4 pk;
          uint32_t* pw = reinterpret_cast<uint32_t*>(&pk);
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            const __nv_bfloat162 h2 = __floats2bfloat162_rn(v[2 * jj], v[2 * jj + 1]);
            pw[jj] = *reinterpret_cast<const uint32_t*>(&h2);
          }
          *reinterpret_cast<uint4*>(p.out + orow * p.DV + col) = pk;
          if (p.lse != nullptr && warp == 0 && g == 0)
            p.lse[orow] = Ls > 0.f ? (m_s[(st_end & 1) * C::kRowsL + rloc] + __log2f(Ls)) * kLn2 : -INFINITY;
        } else {
          float* dst = p.part_o + (int64_t(split) * p.Tq * p.Hq + orow) * p.DV + col;
          *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
          *reinterpret_cast<float4*>(dst + 4) = make_float4(v[4], v[5], v[6], v[7]);
          if (warp == 0 && g == 0)
            p.part_lse[int64_t(split) * p.Tq * p.Hq + orow] =
                Ls > 0.f ? m_s[(st_end & 1) * C::kRowsL + rloc] + __log2f(Ls) : -INFINITY;
        }
      }
  }
}

inline cudaError_t launch_latent(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  constexpr int kSmem = CfgL::kSmemBytes;
  auto kernel = fp8_attention_latent_kernel<0>;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (e != cudaSuccess) return e;
  kernel<<<dim3(static_cast<unsigned>(n_ctas)), CfgL::kThreadsL, kSmem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace attn
}  // namespace k2k
