// Paged FP8-KV attention: the 16-row-tile layout (shapes the other layouts do not take) and the helpers all
// layouts share (docs/attention.md has the derivation).
//
// Work unit (one CTA): 16 "rows" = (query token, query head) pairs of ONE sequence and ONE KV head
// (GQA packing: row r -> token r / group, head r % group), one key-range split, one chunk of DVC
// output channels. The 4 warps share the rows and split the keys (16-key chunks, round robin), each
// keeping its own online-softmax state; the warps merge through shared memory at the end, and
// splits > 1 are merged by fp8_attention_merge.cu. So in decode every K/V byte of a KV head is read
// once for all heads of its group (when group <= 16; more rows -> more CTAs over the same keys, from L2).
//
// Tensor cores (mma.sync m16n8k16, sm_80+ incl. SM120): S = Q K^T in BF16 (FP8 K -> BF16 is exact),
// O += P V in FP16 (FP8 V -> FP16 is exact, P in [0,1]); fp32 accumulation and softmax.
// K/V go global -> registers directly (no shared-memory staging): each thread loads 16 contiguous
// K bytes of one key, because the QK reduction order is free: logical MMA k-index {2t,2t+1,2t+8,2t+9}
// of k-step s maps to physical channel t*16 + s*4 + {0,1,2,3} for BOTH operands (Q is read from
// shared memory with the same map). For V the free index is the output channel: n-tile j, column g
// is channel g*W + j (W = DVC/8), so a thread reads W contiguous bytes of each of its 4 keys and
// pairs keys with byte permutes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "attention/fp8_attention.h"

namespace k2k {
namespace attn {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16;

template <int D, int DVC>
struct Cfg {
  static_assert(D % 64 == 0, "QK channels go in blocks of 64");
  static_assert(DVC == 64 || DVC == 128 || DVC == 256, "DV chunk");
  static constexpr int kBlocks = D / 64;              // 64-channel K blocks per key
  static constexpr int kKPre = kBlocks < 4 ? kBlocks : (D > 256 ? 2 : 4);  // K blocks kept in flight
  static constexpr int W = DVC / 8;                   // V bytes per thread per key (one per n-tile)
  static constexpr int kVWords = W / 4;
  static constexpr int kQStride = D + 8;              // bf16 per Q row in smem; +16 B avoids bank conflicts
  static constexpr int kQBytes = kRows * kQStride * 2;
  static constexpr int kOBytes = (kWarps - 1) * kRows * DVC * 4;   // O of warps 1.. for the merge
  static constexpr int kMainBytes = kQBytes > kOBytes ? kQBytes : kOBytes;
  static constexpr int kSmemBytes = kMainBytes + kWarps * kRows * 2 * 4;  // + (m, l) per warp and row
  // Double-buffer whole chunks in registers where they fit (D <= 128: 254 regs on sm_90a, no spills).
  static constexpr bool kPipelined = kKPre == kBlocks && D <= 128;
};

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_f16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two e4m3 bytes (bits 8..15 and 24..31 of u, others zero) -> bf16x2 holding the exact values.
// Moving sign and exponent/mantissa into bf16 position gives x * 2^-120 (normal and subnormal alike,
// zero stays zero); one bf16x2 multiply by 2^120 (exact: a power of two, result <= 448) undoes it,
// so the tensor core never sees a bf16 subnormal.
__device__ __forceinline__ uint32_t e4m3_pair_to_bf16x2(uint32_t u) {
  const uint32_t bits = (u & 0x80008000u) | ((u >> 4) & 0x07F007F0u);
  uint32_t r;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(r) : "r"(bits), "r"(0x7B807B80u));
  return r;
}

// bf16x2 -> f16x2 for Q in the rows8 / prefill layouts. Exact for 2^-17 <= |q| <= 65504 (bf16 has 8
// significant bits, f16 11); larger |q| is clamped to +-65504 (no model produces such queries),
// smaller ones lose < 2^-25. With Q in f16, S = Q K^T runs as an f16 MMA on K expanded by the hardware
// e4m3x2 -> f16x2 cvt (exact, 1 instruction per pair instead of ~5 for the bf16 route above).
__device__ __forceinline__ uint32_t bf16x2_to_f16x2_clamped(uint32_t w) {
  const float lo = fminf(fmaxf(__uint_as_float(w << 16), -65504.f), 65504.f);
  const float hi = fminf(fmaxf(__uint_as_float(w & 0xFFFF0000u), -65504.f), 65504.f);
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// e4m3 bytes x0 (low) and x1 of a 16-bit value -> f16x2 {x0, x1} (exact, hardware cvt on sm_89+).
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t v16) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v16 & 0xFFFFu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Online softmax, one row, after a chunk: its row maximum mx (log2 domain, reduced over the row's lanes)
// raises the running maximum m. Returns the exp2 base for the chunk's scores (0 while every score so far
// is masked, which keeps exp2 finite) and sets alpha, the factor for the row's earlier sum l (applied
// here) and O (by the caller).
__device__ __forceinline__ float online_max_update(float& m, float& l, float mx, float& alpha) {
  const float m_new = fmaxf(m, mx);
  const float base = m_new == -INFINITY ? 0.f : m_new;
  alpha = fast_exp2(m - base);
  m = m_new;
  l *= alpha;
  return base;
}

// The same for a row of an m16n8 MMA fragment, whose scores are spread over the 4 lanes of a quad: mx is
// this lane's maximum, reduced over the quad first.
__device__ __forceinline__ float quad_max_update(float& m, float& l, float mx, float& alpha) {
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  return online_max_update(m, l, mx, alpha);
}

// Streaming loads: the cache is read once per CTA group; do not keep it in L1.
__device__ __forceinline__ uint4 ld_stream16(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_stream8(const uint8_t* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Cache slot of `key` of sequence b. Page ids are clamped into [0, num_pages): a bad block_table
// entry reads a wrong page, never outside the cache.
__device__ __forceinline__ int64_t slot_of(const Fp8AttnParams& p, const int32_t* bt_row, int key) {
  int page_idx, off;
  if (p.page_shift >= 0) {
    page_idx = key >> p.page_shift;
    off = key & (p.page_size - 1);
  } else {
    page_idx = key / p.page_size;
    off = key - page_idx * p.page_size;
  }
  int page = __ldg(bt_row + page_idx);
  page = min(max(page, 0), p.num_pages - 1);
  return int64_t(page) * p.page_size + off;
}

// Sliding window (p.window_left = w; INT_MAX without one). A row whose keys end at lim (exclusive:
// pos + 1 causal, L otherwise) sees keys lim - 1 - w <= key < lim: one unsigned compare covers both
// edges (key >= lim wraps to >= 2^31 > w). Non-causal rows have no window (the host rejects one).
__device__ __forceinline__ bool key_visible(int key, int lim, int window_left) {
  return unsigned(lim - 1 - key) <= unsigned(window_left);
}
// First key of the window of the row at key position pos (0 without a window; pos - w cannot overflow).
__device__ __forceinline__ int window_begin(int pos, int window_left) { return pos > window_left ? pos - window_left : 0; }

// Per-CTA constants the chunk helpers need.
template <int D, int DVC>
struct Ctx {
  const Fp8AttnParams& p;
  const int32_t* bt_row;
  const uint8_t* k_head;
  const uint8_t* v_head;
  int64_t k_slot_stride;
  int key_begin, key_end;   // keys the tile reads: [window start of its first row, causal end of its last)
  float sl2;
  int lim0, lim1;
  int g, t;
  bool chunk16_pages;
};

// One 16-key chunk's K and V bytes of this thread (plus what the K ring refill needs).
template <int D, int DVC>
struct ChunkRegs {
  uint4 k[2][Cfg<D, DVC>::kKPre];
  uint32_t v[4][Cfg<D, DVC>::kVWords];
  int64_t kslot[2];
  bool kvalid[2];
};

// Issue the loads of chunk c: K rows kb + g, kb + 8 + g (first kKPre 64-channel blocks) and V rows
// kb + 2t + {0, 1, 8, 9}. Keys outside [key_begin, key_end) load zeros (their P is 0, and 0 * NaN garbage
// would not be; and a page wholly before a sliding window is never read).
template <int D, int DVC>
__device__ __forceinline__ void load_chunk(const Ctx<D, DVC>& x, int c, ChunkRegs<D, DVC>& r) {
  using C = Cfg<D, DVC>;
  constexpr int W = C::W;
  const int kb = c * 16, g = x.g, t = x.t;
  int64_t vslot[4];
  bool vvalid[4];
  if (x.chunk16_pages) {    // the 16 keys share one page
    const int64_t base = slot_of(x.p, x.bt_row, kb);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) r.kslot[nt] = base + nt * 8 + g;
#pragma unroll
    for (int i = 0; i < 4; ++i) vslot[i] = base + 2 * t + (i & 1) + (i >> 1) * 8;
  } else {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) r.kslot[nt] = slot_of(x.p, x.bt_row, min(kb + nt * 8 + g, x.key_end - 1));
#pragma unroll
    for (int i = 0; i < 4; ++i)
      vslot[i] = slot_of(x.p, x.bt_row, min(kb + 2 * t + (i & 1) + (i >> 1) * 8, x.key_end - 1));
  }
  const unsigned n_keys = unsigned(x.key_end - x.key_begin);   // key in range <=> unsigned(key - key_begin) < n_keys
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) r.kvalid[nt] = unsigned(kb + nt * 8 + g - x.key_begin) < n_keys;
#pragma unroll
  for (int i = 0; i < 4; ++i) vvalid[i] = unsigned(kb + 2 * t + (i & 1) + (i >> 1) * 8 - x.key_begin) < n_keys;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int blk = 0; blk < C::kKPre; ++blk)
      r.k[nt][blk] = r.kvalid[nt] ? ld_stream16(x.k_head + r.kslot[nt] * x.k_slot_stride + blk * 64 + t * 16)
                                  : make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint8_t* vp = x.v_head + vslot[i] * x.p.v_slot_stride;
#pragma unroll
    for (int w = 0; w < C::kVWords; w += (W >= 16 ? 4 : 2)) {
      if constexpr (W >= 16) {
        const uint4 v = vvalid[i] ? ld_stream16(vp + w * 4) : make_uint4(0, 0, 0, 0);
        r.v[i][w] = v.x; r.v[i][w + 1] = v.y; r.v[i][w + 2] = v.z; r.v[i][w + 3] = v.w;
      } else {
        const uint2 v = vvalid[i] ? ld_stream8(vp + w * 4) : make_uint2(0, 0);
        r.v[i][w] = v.x; r.v[i][w + 1] = v.y;
      }
    }
  }
}

// S = Q K^T for chunk c, online softmax, O += P V.
template <int D, int DVC>
__device__ __forceinline__ void compute_chunk(const Ctx<D, DVC>& x, const __nv_bfloat16* q_s, int c,
                                              ChunkRegs<D, DVC>& r, float (&o)[Cfg<D, DVC>::W][4], float (&m)[2],
                                              float (&l)[2]) {
  using C = Cfg<D, DVC>;
  constexpr int W = C::W;
  const int kb = c * 16, g = x.g, t = x.t;
  const int lim[2] = {x.lim0, x.lim1};
  // ---- S = Q K^T (bf16 MMA; raw e4m3 units, k_scale folded into sl2)
  float s[2][4];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
  for (int blk = 0; blk < C::kBlocks; ++blk) {
    const __nv_bfloat16* qrow = q_s + g * C::kQStride + blk * 64 + t * 16;
    const uint4 qa = *reinterpret_cast<const uint4*>(qrow);
    const uint4 qb = *reinterpret_cast<const uint4*>(qrow + 8);
    const uint4 qc = *reinterpret_cast<const uint4*>(qrow + 8 * C::kQStride);
    const uint4 qd = *reinterpret_cast<const uint4*>(qrow + 8 * C::kQStride + 8);
    const uint32_t qg[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
    const uint32_t qg8[8] = {qc.x, qc.y, qc.z, qc.w, qd.x, qd.y, qd.z, qd.w};
    uint4 kcur[2];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      kcur[nt] = r.k[nt][blk % C::kKPre];
      if (blk + C::kKPre < C::kBlocks)   // refill the ring slot with block blk + kKPre
        r.k[nt][blk % C::kKPre] = r.kvalid[nt] ? ld_stream16(x.k_head + r.kslot[nt] * x.k_slot_stride +
                                                             (blk + C::kKPre) * 64 + t * 16)
                                               : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int s4 = 0; s4 < 4; ++s4) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const uint32_t w = s4 == 0 ? kcur[nt].x : s4 == 1 ? kcur[nt].y : s4 == 2 ? kcur[nt].z : kcur[nt].w;
        const uint32_t b0 = e4m3_pair_to_bf16x2(__byte_perm(w, 0u, 0x1404));   // bytes 0,1 -> k 2t, 2t+1
        const uint32_t b1 = e4m3_pair_to_bf16x2(__byte_perm(w, 0u, 0x3424));   // bytes 2,3 -> k 2t+8, 2t+9
        mma_bf16(s[nt], qg[2 * s4], qg8[2 * s4], qg[2 * s4 + 1], qg8[2 * s4 + 1], b0, b1);
      }
    }
  }

  // ---- online softmax (log2 domain); masked keys are -inf
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = kb + nt * 8 + 2 * t + (e & 1);
      const int rr = e >> 1;
      s[nt][e] = key_visible(key, lim[rr], x.p.window_left) ? s[nt][e] * x.sl2 : -INFINITY;
      mx[rr] = fmaxf(mx[rr], s[nt][e]);
    }
  float alpha[2], base[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    base[rr] = quad_max_update(m[rr], l[rr], mx[rr], alpha[rr]);
  }
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nt][e] = fast_exp2(s[nt][e] - base[e >> 1]);
      l[e >> 1] += s[nt][e];
    }
#pragma unroll
  for (int j = 0; j < W; ++j) {
    o[j][0] *= alpha[0]; o[j][1] *= alpha[0];
    o[j][2] *= alpha[1]; o[j][3] *= alpha[1];
  }
  // P as the A operand (FA2 register reuse): k = key within the chunk
  const uint32_t pa0 = pack_f16x2(s[0][0], s[0][1]), pa1 = pack_f16x2(s[0][2], s[0][3]);
  const uint32_t pa2 = pack_f16x2(s[1][0], s[1][1]), pa3 = pack_f16x2(s[1][2], s[1][3]);

  // ---- O += P V (f16 MMA): n-tile j, column g = channel g*W + j
#pragma unroll
  for (int w = 0; w < C::kVWords; ++w) {
    const uint32_t ab_lo = __byte_perm(r.v[0][w], r.v[1][w], 0x5140);   // [a0 b0 a1 b1]
    const uint32_t ab_hi = __byte_perm(r.v[0][w], r.v[1][w], 0x7362);   // [a2 b2 a3 b3]
    const uint32_t cd_lo = __byte_perm(r.v[2][w], r.v[3][w], 0x5140);
    const uint32_t cd_hi = __byte_perm(r.v[2][w], r.v[3][w], 0x7362);
    mma_f16(o[4 * w + 0], pa0, pa1, pa2, pa3, e4m3x2_to_f16x2(ab_lo), e4m3x2_to_f16x2(cd_lo));
    mma_f16(o[4 * w + 1], pa0, pa1, pa2, pa3, e4m3x2_to_f16x2(ab_lo >> 16), e4m3x2_to_f16x2(cd_lo >> 16));
    mma_f16(o[4 * w + 2], pa0, pa1, pa2, pa3, e4m3x2_to_f16x2(ab_hi), e4m3x2_to_f16x2(cd_hi));
    mma_f16(o[4 * w + 3], pa0, pa1, pa2, pa3, e4m3x2_to_f16x2(ab_hi >> 16), e4m3x2_to_f16x2(cd_hi >> 16));
  }
}

template <int D, int DVC>
__global__ void __launch_bounds__(kThreads, 2) fp8_attention_kernel(const Fp8AttnParams p) {
  using C = Cfg<D, DVC>;
  constexpr int W = C::W;
  extern __shared__ __align__(16) uint8_t smem[];
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem);
  float* red_o = reinterpret_cast<float*>(smem);                       // reuses Q's space after the loop
  float* red_ml = reinterpret_cast<float*>(smem + C::kMainBytes);      // [kWarps][kRows][2]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  // blockIdx.x = (((b * Hkv + h) * S + split) * row_tiles + tile) * dv_chunks + chunk: the CTAs that
  // read the same keys (tiles, chunks) are neighbours, so the repeats hit L2.
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
  if (q_len <= 0 || q_start < 0 || q_start + q_len > p.Tq) return;    // nothing (or invalid): skip
  const int max_keys = p.max_pages * p.page_size;
  const int L = min(max(__ldg(p.seq_lens + b), 0), max_keys);       // clamped: never past block_table
  const int G = p.group;
  const int n_rows = q_len * G;
  const int32_t* bt_row = p.block_table + int64_t(b) * p.max_pages;
  const float sl2 = p.softmax_scale_log2 * __ldg(p.k_scale + (p.k_per_head ? h : 0));
  const float vscale = __ldg(p.v_scale + (p.v_per_head ? h : 0));
  const uint8_t* k_head = p.k_cache + int64_t(h) * D;
  const int64_t k_slot_stride = int64_t(p.Hkv) * D;
  const uint8_t* v_head = p.v_cache + int64_t(h) * p.v_head_stride + int64_t(chunk) * DVC + g * W;
  const bool chunk16_pages = (p.page_size & 15) == 0;

  // Rows beyond the grid's row_tiles (a q_len above the host's estimate) are covered by looping.
  for (int tile = tile0; tile * kRows < n_rows; tile += p.row_tiles) {
    const int row0 = tile * kRows;
    __syncthreads();   // the previous tile's merge may still read red_o (same bytes as q_s)
    for (int i = threadIdx.x; i < kRows * (D / 8); i += kThreads) {
      const int r = i / (D / 8), c = i % (D / 8), row = row0 + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < n_rows) {
        const int qi = row / G, hh = row - qi * G;
        v = __ldg(reinterpret_cast<const uint4*>(p.q + (int64_t(q_start + qi) * p.Hq + h * G + hh) * D) + c);
      }
      *reinterpret_cast<uint4*>(q_s + r * C::kQStride + c * 8) = v;
    }
    __syncthreads();

    // Key limits: row r sees keys < lim (bottom-right causal: L - q_len + qi + 1) and, with a sliding
    // window, >= lim - 1 - window_left (key_visible).
    int lim[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int row = row0 + g + rr * 8;
      lim[rr] = 0;
      if (row < n_rows) lim[rr] = p.causal ? min(L, L - q_len + row / G + 1) : L;
    }
    int key_end = L;
    if (p.causal) key_end = min(L, L - q_len + (min(row0 + kRows, n_rows) - 1) / G + 1);
    key_end = max(key_end, 0);
    // The tile's first row has the earliest window start; chunks before it are never visited, and the
    // splits divide the chunks [c_first, n_chunks) (chunks stay on the 16-key grid: one page lookup).
    const int key_begin = min(window_begin(L - q_len + row0 / G, p.window_left), key_end);
    const int c_first = key_begin >> 4;
    const int n_chunks = (key_end + 15) >> 4;
    const int per_split = (n_chunks - c_first + p.num_splits - 1) / p.num_splits;
    const int c_begin = c_first + split * per_split;
    const int c_end = min(n_chunks, c_begin + per_split);

    float o[W][4];
#pragma unroll
    for (int j = 0; j < W; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    Ctx<D, DVC> x{p, bt_row, k_head, v_head, k_slot_stride, key_begin, key_end, sl2, lim[0], lim[1], g, t, chunk16_pages};
    if constexpr (C::kPipelined) {
      // Two chunks in flight per warp: the next chunk's loads are issued before this chunk's math.
      ChunkRegs<D, DVC> ra, rb;
      int c = c_begin + warp;
      if (c < c_end) load_chunk(x, c, ra);
      for (; c < c_end; c += 2 * kWarps) {
        if (c + kWarps < c_end) load_chunk(x, c + kWarps, rb);
        compute_chunk(x, q_s, c, ra, o, m, l);
        if (c + kWarps >= c_end) break;
        if (c + 2 * kWarps < c_end) load_chunk(x, c + 2 * kWarps, ra);
        compute_chunk(x, q_s, c + kWarps, rb, o, m, l);
      }
    } else {
      ChunkRegs<D, DVC> ra;
      for (int c = c_begin + warp; c < c_end; c += kWarps) {
        load_chunk(x, c, ra);
        compute_chunk(x, q_s, c, ra, o, m, l);
      }
    }

    // ---- merge the 4 warps' states of the same rows
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 1);
      l[rr] += __shfl_xor_sync(0xffffffffu, l[rr], 2);
    }
    if (t == 0) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        red_ml[(warp * kRows + g + rr * 8) * 2 + 0] = m[rr];
        red_ml[(warp * kRows + g + rr * 8) * 2 + 1] = l[rr];
      }
    }
    __syncthreads();   // also: every warp is done reading q_s, so red_o may overwrite it
    float f[2], lse[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int row = g + rr * 8;
      float M = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) M = fmaxf(M, red_ml[(w * kRows + row) * 2]);
      float Lsum = 0.f;
      if (M != -INFINITY) {
#pragma unroll
        for (int w = 0; w < kWarps; ++w)
          Lsum += red_ml[(w * kRows + row) * 2 + 1] * fast_exp2(red_ml[(w * kRows + row) * 2] - M);
      }
      const bool empty = !(Lsum > 0.f);
      f[rr] = empty ? 0.f : fast_exp2(m[rr] - M) / Lsum;
      lse[rr] = empty ? -INFINITY : M + __log2f(Lsum);
    }
    if (warp > 0) {
      float* dst = red_o + (warp - 1) * kRows * DVC;
#pragma unroll
      for (int j = 0; j < W; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          dst[(g + (e >> 1) * 8) * DVC + (2 * t + (e & 1)) * W + j] = o[j][e] * f[e >> 1];
    }
    __syncthreads();
    if (warp == 0) {
      const bool direct = p.num_splits == 1;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int row = row0 + g + rr * 8;
        if (row >= n_rows) continue;
        const int qi = row / G, hh = row - qi * G;
        const int64_t orow = int64_t(q_start + qi) * p.Hq + h * G + hh;   // token-major [Tq, Hq]
#pragma unroll
        for (int cc = 0; cc < 2; ++cc) {           // channels (2t + cc) * W + [0, W)
          const int ch0 = (2 * t + cc) * W;
#pragma unroll
          for (int j0 = 0; j0 < W; j0 += 8) {
            float v[8];
#pragma unroll
            for (int jj = 0; jj < 8; ++jj) {
              float acc = o[j0 + jj][rr * 2 + cc] * f[rr];
#pragma unroll
              for (int w = 0; w < kWarps - 1; ++w) acc += red_o[(w * kRows + g + rr * 8) * DVC + ch0 + j0 + jj];
              v[jj] = acc * vscale;
            }
            const int64_t col = int64_t(chunk) * DVC + ch0 + j0;
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
        }
        if (!direct && chunk == 0 && t == 0) p.part_lse[int64_t(split) * p.Tq * p.Hq + orow] = lse[rr];
        if (direct && p.lse != nullptr && chunk == 0 && t == 0) p.lse[orow] = lse[rr] * kLn2;
      }
    }
  }
}

}  // namespace attn
}  // namespace k2k
