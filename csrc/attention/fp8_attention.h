// Framework-free interface of the paged FP8-KV attention kernels (docs/attention.md).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {

// Everything one launch needs; plain pointers, filled by the torch launcher (attention_ops.cpp).
struct Fp8AttnParams {
  const __nv_bfloat16* q;        // [Tq, Hq, D] bf16, contiguous
  const uint8_t* k_cache;        // [pages, page_size, Hkv, D] e4m3
  const uint8_t* v_cache;        // [pages, page_size, Hkv, DV] e4m3, or k_cache itself (latent: V = K[..., :DV])
  const int32_t* block_table;    // [B, max_pages]
  const int32_t* seq_lens;       // [B]
  const int32_t* cu_seqlens_q;   // [B + 1]
  const float* k_scale;          // [1] or [Hkv]
  const float* v_scale;          // [1] or [Hkv]
  __nv_bfloat16* out;            // [Tq, Hq, DV] bf16 (written directly when num_splits == 1)
  float* part_o;                 // [num_splits, Tq, Hq, DV] fp32, normalized per split (num_splits > 1)
  float* part_lse;               // [num_splits, Tq, Hq] fp32, log2-domain LSE of each split (-inf = empty)
  float* lse;                    // [Tq, Hq] fp32 natural-log LSE of the scaled scores, or nullptr (not wanted)
  int64_t v_slot_stride;         // elements between consecutive cache slots of V (Hkv * DV, or Hkv * D latent)
  int64_t v_head_stride;         // elements between KV heads of V (DV, or D latent)
  float softmax_scale_log2;      // softmax_scale * log2(e); k_scale is folded in per KV head
  int Tq, B, Hq, Hkv, group, D, DV;
  int page_size, page_shift;     // page_shift >= 0 when page_size is a power of two, else -1
  int max_pages, num_pages;
  int k_per_head, v_per_head;    // scale tensors hold Hkv values (1) or one value (0)
  int causal;
  int window_left;               // sliding window (causal): the row at key position pos sees keys pos - window_left .. pos;
                                 // INT_MAX without one (the host maps -1), so one unsigned compare tests both edges
  int latent;                    // 1: MLA-latent decode layout (D 576 / DV 512, 8 warps, 64 rows per CTA)
  int prefill;                   // 1: prefill layout (FA2 CTAs, K/V converted once into shared memory;
                                 //    q_len > 1, and decode with large GQA groups)
  int prefill_m_tiles;           // prefill layout: m16 tiles per warp, 2 (128-row CTAs, the host's q_len
                                 //    estimate > 1) or 1 (decode: a KV head's rows are its group)
  int rows8;                     // 1: decode layout for group <= 8 (8-row tiles, keys in the MMA M dimension)
  int row_tiles;                 // grid tiles of 16 rows (8 rows8, 64 x prefill_m_tiles / prefill_warp_split prefill, 64 latent) per (sequence, KV head); CTAs loop past it
  int num_splits;                // key-range splits (flash-decoding); 1 = write out directly
  int dv_chunks;                 // output-channel chunks (DV / DVC) computed by separate CTAs
  int prefill_warp_split;        // prefill layout, one m16 tile per warp: warps sharing a 16-row tile, each
                                 //    taking a part of every chunk's keys: 1 (64-row CTAs), 2 (32), 4 (16)
                                 //    (last: the other kernels' parameter offsets stay as they were)
  int prefill_wgmma;             // prefill layout, 128-row CTAs, sm_90 only: keys per chunk of the wgmma kernel
                                 //    (fp8_attention_prefill_wgmma.cuh; 64 / 96 at D 128, 64 / 128 at D 64), 0 = mma.sync
};

// Returns false if (D, DV) has no compiled configuration (the launcher checks first).
bool fp8_attention_supported(int D, int DV);
// Output-channel chunk width of the (D, DV) configuration: DV is split into DV / chunk CTAs.
int fp8_attention_dv_chunk(int D, int DV);
// Dynamic shared memory of the (D, DV) configuration (the largest of its layouts), bytes.
int fp8_attention_smem_bytes(int D, int DV);
// Whether the prefill layout (fp8_attention_prefill.cuh) exists for (D, DV).
bool fp8_attention_prefill_supported(int D, int DV);
// Dynamic shared memory of the sm_90a wgmma prefill kernel (fp8_attention_prefill_wgmma.cuh) with `keys`
// keys per chunk at (D, DV); 0 when that configuration does not exist.
int fp8_attention_prefill_wgmma_smem_bytes(int D, int DV, int keys);
// Whether the latent layout (fp8_attention_latent.cuh) exists for (D, DV), and its resident CTAs per SM.
bool fp8_attention_latent_supported(int D, int DV);
int fp8_attention_latent_ctas_per_sm(int device);
// Resident CTAs per SM of the (D, layout) kernel on `device` (occupancy query, cached; the prefill
// layout exists for D 64 and 128 only, with 128-row CTAs (2 m16 tiles per warp) or one m16 tile per
// warp and 64-, 32- or 16-row CTAs (1, 2 or 4 warps per row tile)).
enum Fp8AttnLayout : int {
  kLayoutRows16 = 0, kLayoutRows8 = 1, kLayoutPrefill64 = 2, kLayoutPrefill128 = 3, kLayoutPrefill32 = 4,
  kLayoutPrefill16 = 5, kLayoutCount = 6
};
int fp8_attention_ctas_per_sm(int D, int layout, int device);
// ln 2: the kernels keep log-sum-exps in the log2 domain; p.lse is natural-log.
constexpr float kLn2 = 0.6931471805599453f;
// Launch the split kernel (and the merge when num_splits > 1) on `stream`.
cudaError_t launch_fp8_attention(const Fp8AttnParams& p, cudaStream_t stream);

}  // namespace k2k
