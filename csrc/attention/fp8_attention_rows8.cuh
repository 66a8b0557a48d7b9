// Decode layout for GQA groups <= 8 (docs/attention.md): the MMAs are transposed so the 16 keys of a
// chunk fill the M dimension and the <= 8 query rows the N dimension, instead of padding 8 heads to
// an m16 tile. Against fp8_attention_kernel this halves the MMAs, the O registers (32 instead of 64
// at DV 128, so more warps fit an SM) and the O rescales per chunk.
//   S^T[key][row] = K Q^T:  A = K (the same 16-byte loads: keys g and g+8, channel map as there),
//                           B = Q^T from shared memory (f16).
//   O^T[ch][row] += V^T P^T: A = V^T (channel rows g / g+8 of m-tile i = channels g*W + 2i, +1),
//                           B = P^T: the S^T accumulator is [key][row]; movmatrix.trans turns each
//                           8x8 half into the [row][key] fragment B needs, in registers.
#pragma once
#include "attention/fp8_attention_kernel.cuh"

namespace k2k {
namespace attn {

constexpr int kRows8 = 8;

template <int D, int DVC>
struct Cfg8 {
  using Base = Cfg<D, DVC>;
  static constexpr int W = Base::W;
  static constexpr int kMTiles = W / 2;                 // m16 tiles of output channels
  static constexpr int kQStride = D + 8;
  static constexpr int kQBytes = kRows8 * kQStride * 2;
  // Warps per CTA. Decode is latency-bound: each warp keeps 4-8 KB of K/V in flight (two chunks in
  // registers), and HBM needs ~100 KB per SM in flight (benchmarks/probe_kv_pattern.cu: 8 warps per SM
  // reading this way reach 75 % of the copy rate, 16 reach 100 %). Registers cap an SM at 12 warps
  // (<= 170 each) and a batch of 32 sequences x 8 KV heads is ~2 CTAs per SM, so a CTA has 6 warps:
  // B=32, 8K keys 184 -> 145-159 us, 32K 721 -> 587 us on the H200 (benchmarks/RESULTS.md, sixth session).
  // D 576 needs more registers: 4 warps, 2 CTAs per SM.
  static constexpr int kWarps = D > 256 ? 4 : 6;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kOBytes = (kWarps - 1) * kRows8 * DVC * 4;
  static constexpr int kMainBytes = kQBytes > kOBytes ? kQBytes : kOBytes;
  static constexpr int kSmemBytes = kMainBytes + kWarps * kRows8 * 2 * 4;
  static constexpr int kMinBlocks = 2;   // <= 170 registers at 6 warps (D <= 256), <= 255 at 4 (D 576)
};

__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t a) {
  uint32_t d;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(a));
  return d;
}

// Chunk c: S^T, online softmax over the keys (rows 2t, 2t+1 of this thread), O^T += V^T P^T.
template <int D, int DVC>
__device__ __forceinline__ void compute_chunk8(const Ctx<D, DVC>& x, const __half* q_s, int c, ChunkRegs<D, DVC>& r,
                                               float (&o)[Cfg8<D, DVC>::kMTiles][4], float (&m)[2], float (&l)[2]) {
  using C = Cfg<D, DVC>;
  using C8 = Cfg8<D, DVC>;
  const int kb = c * 16, g = x.g, t = x.t;
  const int lim[2] = {x.lim0, x.lim1};
  // s[e]: key kb + g + (e >> 1) * 8, row 2t + (e & 1)
  float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int blk = 0; blk < C::kBlocks; ++blk) {
    const __half* qrow = q_s + g * C8::kQStride + blk * 64 + t * 16;
    const uint4 qa = *reinterpret_cast<const uint4*>(qrow);
    const uint4 qb = *reinterpret_cast<const uint4*>(qrow + 8);
    const uint32_t qw[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
    uint4 kcur[2];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      kcur[nt] = r.k[nt][blk % C::kKPre];
      if (blk + C::kKPre < C::kBlocks)
        r.k[nt][blk % C::kKPre] = r.kvalid[nt] ? ld_stream16(x.k_head + r.kslot[nt] * x.k_slot_stride +
                                                             (blk + C::kKPre) * 64 + t * 16)
                                               : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int s4 = 0; s4 < 4; ++s4) {
      const uint32_t wg = s4 == 0 ? kcur[0].x : s4 == 1 ? kcur[0].y : s4 == 2 ? kcur[0].z : kcur[0].w;
      const uint32_t wg8 = s4 == 0 ? kcur[1].x : s4 == 1 ? kcur[1].y : s4 == 2 ? kcur[1].z : kcur[1].w;
      mma_f16(s, e4m3x2_to_f16x2(wg), e4m3x2_to_f16x2(wg8), e4m3x2_to_f16x2(wg >> 16), e4m3x2_to_f16x2(wg8 >> 16),
              qw[2 * s4], qw[2 * s4 + 1]);
    }
  }

  // ---- online softmax per row (column of S^T): reduce over keys = over g (lanes 4, 8, 16 apart)
  float mx[2];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int key = kb + g + (e >> 1) * 8;
    s[e] = key_visible(key, lim[e & 1], x.p.window_left) ? s[e] * x.sl2 : -INFINITY;
  }
  mx[0] = fmaxf(s[0], s[2]);
  mx[1] = fmaxf(s[1], s[3]);
  float alpha[2], base[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 4));
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 8));
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 16));
    base[rr] = online_max_update(m[rr], l[rr], mx[rr], alpha[rr]);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    s[e] = fast_exp2(s[e] - base[e & 1]);
    l[e & 1] += s[e];
  }
  if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
#pragma unroll
    for (int i = 0; i < C8::kMTiles; ++i) {
      o[i][0] *= alpha[0]; o[i][1] *= alpha[1];
      o[i][2] *= alpha[0]; o[i][3] *= alpha[1];
    }
  }
  // P^T halves [key g (+8)][rows 2t, 2t+1] -> transposed: [row g][keys 2t, 2t+1 (+8)] = B fragment
  const uint32_t pb0 = movmatrix_trans(pack_f16x2(s[0], s[1]));
  const uint32_t pb1 = movmatrix_trans(pack_f16x2(s[2], s[3]));

  // ---- O^T += V^T P^T: m-tile i rows g / g+8 = channels g*W + 2i / 2i + 1
#pragma unroll
  for (int w = 0; w < C::kVWords; ++w) {
    const uint32_t ab_lo = __byte_perm(r.v[0][w], r.v[1][w], 0x5140);   // [a0 b0 a1 b1]: channels 4w, 4w+1
    const uint32_t ab_hi = __byte_perm(r.v[0][w], r.v[1][w], 0x7362);   // channels 4w+2, 4w+3
    const uint32_t cd_lo = __byte_perm(r.v[2][w], r.v[3][w], 0x5140);
    const uint32_t cd_hi = __byte_perm(r.v[2][w], r.v[3][w], 0x7362);
    mma_f16(o[2 * w], e4m3x2_to_f16x2(ab_lo), e4m3x2_to_f16x2(ab_lo >> 16), e4m3x2_to_f16x2(cd_lo),
            e4m3x2_to_f16x2(cd_lo >> 16), pb0, pb1);
    mma_f16(o[2 * w + 1], e4m3x2_to_f16x2(ab_hi), e4m3x2_to_f16x2(ab_hi >> 16), e4m3x2_to_f16x2(cd_hi),
            e4m3x2_to_f16x2(cd_hi >> 16), pb0, pb1);
  }
}

template <int D, int DVC>
__global__ void __launch_bounds__(Cfg8<D, DVC>::kThreads, Cfg8<D, DVC>::kMinBlocks) fp8_attention_rows8_kernel(const Fp8AttnParams p) {
  using C = Cfg<D, DVC>;
  using C8 = Cfg8<D, DVC>;
  constexpr int W = C::W;
  extern __shared__ __align__(16) uint8_t smem[];
  __half* q_s = reinterpret_cast<__half*>(smem);
  float* red_o = reinterpret_cast<float*>(smem);
  float* red_ml = reinterpret_cast<float*>(smem + C8::kMainBytes);     // [warps][8][2]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int64_t idx = blockIdx.x;
  const int chunk = int(idx % p.dv_chunks);
  idx /= p.dv_chunks;
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
  const float sl2 = p.softmax_scale_log2 * __ldg(p.k_scale + (p.k_per_head ? h : 0));
  const float vscale = __ldg(p.v_scale + (p.v_per_head ? h : 0));

  for (int tile = tile0; tile * kRows8 < n_rows; tile += p.row_tiles) {
    const int row0 = tile * kRows8;
    __syncthreads();
    for (int i = threadIdx.x; i < kRows8 * (D / 8); i += C8::kThreads) {
      const int rw = i / (D / 8), cc = i % (D / 8), row = row0 + rw;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < n_rows) {
        const int qi = row / G, hh = row - qi * G;
        v = __ldg(reinterpret_cast<const uint4*>(p.q + (int64_t(q_start + qi) * p.Hq + h * G + hh) * D) + cc);
      }
      v = make_uint4(bf16x2_to_f16x2_clamped(v.x), bf16x2_to_f16x2_clamped(v.y), bf16x2_to_f16x2_clamped(v.z),
                     bf16x2_to_f16x2_clamped(v.w));
      *reinterpret_cast<uint4*>(q_s + rw * C8::kQStride + cc * 8) = v;
    }
    __syncthreads();

    int lim[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int row = row0 + 2 * t + rr;
      lim[rr] = 0;
      if (row < n_rows) lim[rr] = p.causal ? min(L, L - q_len + row / G + 1) : L;
    }
    int key_end = L;
    if (p.causal) key_end = min(L, L - q_len + (min(row0 + kRows8, n_rows) - 1) / G + 1);
    key_end = max(key_end, 0);
    // sliding window: from the first row's window start (as in fp8_attention_kernel)
    const int key_begin = min(window_begin(L - q_len + row0 / G, p.window_left), key_end);
    const int c_first = key_begin >> 4;
    const int n_chunks = (key_end + 15) >> 4;
    const int per_split = (n_chunks - c_first + p.num_splits - 1) / p.num_splits;
    const int c_begin = c_first + split * per_split;
    const int c_end = min(n_chunks, c_begin + per_split);

    float o[C8::kMTiles][4];
#pragma unroll
    for (int i = 0; i < C8::kMTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    const Ctx<D, DVC> x{p, p.block_table + int64_t(b) * p.max_pages, p.k_cache + int64_t(h) * D,
                        p.v_cache + int64_t(h) * p.v_head_stride + int64_t(chunk) * DVC + g * W,
                        int64_t(p.Hkv) * D, key_begin, key_end, sl2, lim[0], lim[1], g, t, (p.page_size & 15) == 0};
    if constexpr (C::kPipelined) {
      ChunkRegs<D, DVC> ra, rb;
      int c = c_begin + warp;
      if (c < c_end) load_chunk(x, c, ra);
      for (; c < c_end; c += 2 * C8::kWarps) {
        if (c + C8::kWarps < c_end) load_chunk(x, c + C8::kWarps, rb);
        compute_chunk8(x, q_s, c, ra, o, m, l);
        if (c + C8::kWarps >= c_end) break;
        if (c + 2 * C8::kWarps < c_end) load_chunk(x, c + 2 * C8::kWarps, ra);
        compute_chunk8(x, q_s, c + C8::kWarps, rb, o, m, l);
      }
    } else {
      ChunkRegs<D, DVC> ra;
      for (int c = c_begin + warp; c < c_end; c += C8::kWarps) {
        load_chunk(x, c, ra);
        compute_chunk8(x, q_s, c, ra, o, m, l);
      }
    }

    // ---- merge the warps: l is per thread over its keys -> sum over g
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 4);
      l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 8);
      l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 16);
    }
    if (g == 0) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        red_ml[(warp * kRows8 + 2 * t + rr) * 2 + 0] = m[rr];
        red_ml[(warp * kRows8 + 2 * t + rr) * 2 + 1] = l[rr];
      }
    }
    __syncthreads();
    float f[2], lse[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int row = 2 * t + rr;
      float M = -INFINITY;
#pragma unroll
      for (int w = 0; w < C8::kWarps; ++w) M = fmaxf(M, red_ml[(w * kRows8 + row) * 2]);
      float Lsum = 0.f;
      if (M != -INFINITY) {
#pragma unroll
        for (int w = 0; w < C8::kWarps; ++w)
          Lsum += red_ml[(w * kRows8 + row) * 2 + 1] * fast_exp2(red_ml[(w * kRows8 + row) * 2] - M);
      }
      const bool empty = !(Lsum > 0.f);
      f[rr] = empty ? 0.f : fast_exp2(m[rr] - M) / Lsum;
      lse[rr] = empty ? -INFINITY : M + __log2f(Lsum);
    }
    // o[i][e]: row 2t + (e & 1), channel g*W + 2i + (e >> 1)
    if (warp > 0) {
      float* dst = red_o + (warp - 1) * kRows8 * DVC;
#pragma unroll
      for (int i = 0; i < C8::kMTiles; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[(2 * t + (e & 1)) * DVC + g * W + 2 * i + (e >> 1)] = o[i][e] * f[e & 1];
    }
    __syncthreads();
    if (warp == 0) {
      const bool direct = p.num_splits == 1;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int row = row0 + 2 * t + rr;
        if (row >= n_rows) continue;
        const int qi = row / G, hh = row - qi * G;
        const int64_t orow = int64_t(q_start + qi) * p.Hq + h * G + hh;
#pragma unroll
        for (int j0 = 0; j0 < W; j0 += 8) {
          float v[8];
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) {
            const int j = j0 + jj;                         // channel g*W + j = m-tile j/2, half j&1
            float acc = o[j >> 1][rr + 2 * (j & 1)] * f[rr];
#pragma unroll
            for (int w = 0; w < C8::kWarps - 1; ++w) acc += red_o[(w * kRows8 + 2 * t + rr) * DVC + g * W + j];
            v[jj] = acc * vscale;
          }
          const int64_t col = int64_t(chunk) * DVC + g * W + j0;
          if (direct) {
            uint4 pk;
            uint32_t* pw = reinterpret_cast<uint32_t*>(&pk);
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
              const __nv_bfloat162 h2 = __floats2bfloat162_rn(v[2 * jj], v[2 * jj + 1]);
              pw[jj] = *reinterpret_cast<const uint32_t*>(&h2);
            }
            *reinterpret_cast<uint4*>(p.out + orow * p.DV + col) = pk;
          } else {
            float* dst = p.part_o + (int64_t(split) * p.Tq * p.Hq + orow) * p.DV + col;
            *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
            *reinterpret_cast<float4*>(dst + 4) = make_float4(v[4], v[5], v[6], v[7]);
          }
        }
        if (!direct && chunk == 0 && g == 0) p.part_lse[int64_t(split) * p.Tq * p.Hq + orow] = lse[rr];
        if (direct && p.lse != nullptr && chunk == 0 && g == 0) p.lse[orow] = lse[rr] * kLn2;
      }
    }
  }
}

// Resident CTAs per SM of one (D, DVC) layout (registers + shared memory), for the split heuristic.
template <int D, int DVC>
int ctas_per_sm(bool rows8) {
  int n = 0;
  if (rows8) {
    constexpr int kSmem = Cfg8<D, DVC>::kSmemBytes;
    auto kernel = fp8_attention_rows8_kernel<D, DVC>;
    if (kSmem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, Cfg8<D, DVC>::kThreads, kSmem);
  } else {
    constexpr int kSmem = Cfg<D, DVC>::kSmemBytes;
    auto kernel = fp8_attention_kernel<D, DVC>;
    if (kSmem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, kSmem);
  }
  return n > 0 ? n : 1;
}

// One (D, DVC) configuration: either layout; sets the opt-in above the default 48 KiB and launches.
template <int D, int DVC>
cudaError_t launch_config(const Fp8AttnParams& p, int64_t n_ctas, cudaStream_t stream) {
  constexpr int kSmem16 = Cfg<D, DVC>::kSmemBytes;
  constexpr int kSmem8 = Cfg8<D, DVC>::kSmemBytes;
  const dim3 grid(static_cast<unsigned>(n_ctas));
  if (p.rows8) {
    auto kernel = fp8_attention_rows8_kernel<D, DVC>;
    if (kSmem8 > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem8);
      if (e != cudaSuccess) return e;
    }
    kernel<<<grid, Cfg8<D, DVC>::kThreads, kSmem8, stream>>>(p);
  } else {
    auto kernel = fp8_attention_kernel<D, DVC>;
    if (kSmem16 > 48 * 1024) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem16);
      if (e != cudaSuccess) return e;
    }
    kernel<<<grid, kThreads, kSmem16, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace attn
}  // namespace k2k
