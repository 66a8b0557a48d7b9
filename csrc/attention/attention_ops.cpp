// torch bindings of the attention family: kv_cache_append and fp8_kv_attention.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include <climits>
#include <cmath>
#include <cstdlib>

#include "attention/fp8_attention.h"
#include "attention/kv_cache_append.h"
#include "common/smem_limit.h"
#include "common/torch_checks.h"

namespace {

constexpr const char* kAppend = "kv_cache_append";

void append_one(const at::Tensor& x, const at::Tensor& cache, const at::Tensor& slots, const at::Tensor& scale,
                cudaStream_t stream) {
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2);
  k2k::launch_kv_cache_append(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr()),
                              reinterpret_cast<uint8_t*>(cache.data_ptr()), slots.data_ptr<int64_t>(),
                              scale.data_ptr<float>(), scale.numel() > 1, T, H, D, cache.size(0) * cache.size(1), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void kv_cache_append_cuda(const at::Tensor& k, const std::optional<at::Tensor>& v, at::Tensor& k_cache,
                          const std::optional<at::Tensor>& v_cache, const at::Tensor& slot_mapping,
                          const at::Tensor& k_scale, const std::optional<at::Tensor>& v_scale) {
  k2k::check_tensor(kAppend, "k", k, at::kBFloat16, 3, "bfloat16 [T, H_kv, D]");
  k2k::check_tensor(kAppend, "k_cache", k_cache, at::kFloat8_e4m3fn, 4, "float8_e4m3fn [pages, page_size, H_kv, D]");
  const int64_t T = k.size(0), H = k.size(1), D = k.size(2);
  TORCH_CHECK_VALUE(k_cache.size(2) == H && k_cache.size(3) == D, "k2kernels.kv_cache_append: k_cache must be [pages, page_size, ",
                    H, ", ", D, "] to match k ", k.sizes(), "; got ", k_cache.sizes());
  k2k::check_tensor(kAppend, "slot_mapping", slot_mapping, at::kLong, 1, "int64 [T]");
  TORCH_CHECK_VALUE(slot_mapping.size(0) == T, "k2kernels.kv_cache_append: slot_mapping must be int64 [", T,
                    "] (one slot per token of k); got ", slot_mapping.sizes());
  k2k::check_scale(kAppend, "k_scale", k_scale, H);
  TORCH_CHECK_VALUE(v.has_value() == v_cache.has_value(),
                    "k2kernels.kv_cache_append: v and v_cache must both be given or both be None (None = latent cache with V inside K)");
  k2k::check_on_device(kAppend, "k_cache", k_cache, k);
  k2k::check_on_device(kAppend, "slot_mapping", slot_mapping, k);
  k2k::check_on_device(kAppend, "k_scale", k_scale, k);
  const c10::cuda::CUDAGuard guard(k.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  append_one(k, k_cache, slot_mapping, k_scale, stream);
  if (v.has_value()) {
    k2k::check_tensor(kAppend, "v", *v, at::kBFloat16, 3, "bfloat16 [T, H_kv, D_v]");
    k2k::check_tensor(kAppend, "v_cache", *v_cache, at::kFloat8_e4m3fn, 4, "float8_e4m3fn [pages, page_size, H_kv, D_v]");
    TORCH_CHECK_VALUE(v->size(0) == T && v->size(1) == H, "k2kernels.kv_cache_append: v must be bfloat16 [", T, ", ", H,
                      ", D_v]; got ", v->sizes());
    TORCH_CHECK_VALUE(v_cache->size(0) == k_cache.size(0) && v_cache->size(1) == k_cache.size(1) && v_cache->size(2) == H &&
                          v_cache->size(3) == v->size(2),
                      "k2kernels.kv_cache_append: v_cache must be [", k_cache.size(0), ", ", k_cache.size(1), ", ", H, ", ",
                      v->size(2), "]; got ", v_cache->sizes());
    TORCH_CHECK_VALUE(v_scale.has_value(), "k2kernels.kv_cache_append: v_scale must be a float32 tensor when v is given");
    k2k::check_scale(kAppend, "v_scale", *v_scale, H);
    k2k::check_on_device(kAppend, "v", *v, k);
    k2k::check_on_device(kAppend, "v_cache", *v_cache, k);
    k2k::check_on_device(kAppend, "v_scale", *v_scale, k);
    append_one(*v, *v_cache, slot_mapping, *v_scale, stream);
  }
}

constexpr const char* kAttn = "fp8_kv_attention";

void check_aligned16(const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, "k2kernels.fp8_kv_attention: ", name,
                    " must be 16-byte aligned (use a fresh tensor, not an offset view)");
}

// Key-range splits (flash-decoding), chosen on the host from shapes only (no device sync): as many as
// fit in ONE wave of resident CTAs (capacity = SMs x CTAs per SM), at least 512 keys per split, at
// most 64. An H200 sweep (B = 1/8/32, 8K, 2026-11-29) found one full wave fastest and each extra
// wave ~11 us slower (per-split fixed cost: Q load, warp merge, partial write, merge pass).
// The length bound is block_table.shape[1] * page_size, or the keys a row tile's sliding window can
// span; the kernel splits each sequence's real (windowed) key range.
// K2K_ATTN_SPLITS (benchmarking, tuning, tests): a forced split count in [1, 256], else 0 (unset,
// unparsable or <= 0).
int forced_splits() {
  const char* env = std::getenv("K2K_ATTN_SPLITS");
  const int s = env == nullptr ? 0 : std::atoi(env);
  return s > 0 ? std::min(s, 256) : 0;
}

int choose_splits(int64_t base_ctas, int64_t key_bound, int64_t capacity) {
  if (const int s = forced_splits()) return s;
  if (base_ctas <= 0) return 1;
  int64_t s = capacity / base_ctas;
  s = std::min<int64_t>(s, key_bound / 512);
  return int(std::max<int64_t>(1, std::min<int64_t>(s, 64)));
}

// Decode with GQA groups >= 32 takes the prefill layout from this many (sequence, KV head) pairs on:
// fewer leave its grid (pairs x key splits of >= 512 keys) too small. H200, Hq 128 / 8K, forced on vs
// off (eighth session, with the warp key split at group 32): B x H_kv = 1 x 4 pairs 29.0 vs 29.7 us,
// 2 x 2 36.0 vs 36.8, 2 x 4 29.7 vs 37.0, 4 x 2 35.7 vs 45.2, 1 x 2 35.4 vs 29.9.
constexpr int64_t kPrefillDecodeMinHeads = 8;

// The prefill layout's 128-row CTAs run on wgmma on sm_90 GPUs (fp8_attention_prefill_wgmma.cuh):
// returns its keys per chunk, or 0 for the mma.sync kernel (other GPUs, or shared memory over the
// opt-in limit). Defaults from the H200 (eleventh session, causal 8K GQA 64/8, `bench_attention.py
// --cases prefill_kernels`): D 128 96 keys 3492 us (0.92x SDPA-flash), 64 keys 3580, mma.sync 4246;
// D 64 128 keys 2201 us (0.86x), 64 keys 2472, mma.sync 2251.
// K2K_ATTN_PREFILL_WGMMA (benchmarks, tests): 0 = the mma.sync kernel; a key count forces that
// configuration (64 / 96 at D 128, 64 / 128 at D 64). Anything else is an error, and so is a forced
// count that this sm_90 GPU cannot run (shared memory over the opt-in limit); other GPUs have no wgmma
// and take the mma.sync kernel whatever the knob says.
int prefill_wgmma_keys(int D, int DV, int device) {
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);   // an attribute query, no sync
  const char* env = std::getenv("K2K_ATTN_PREFILL_WGMMA");
  int keys = D == 128 ? 96 : 128;
  if (env != nullptr) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    const bool whole = end != env && *end == '\0';
    TORCH_CHECK_VALUE(whole && (v == 0 || k2k::fp8_attention_prefill_wgmma_smem_bytes(D, DV, int(v)) > 0),
                      "k2kernels.fp8_kv_attention: K2K_ATTN_PREFILL_WGMMA=", env, " is not a configuration of D_qk = ", D,
                      " (use 0, or 64 / 96 at D 128, 64 / 128 at D 64)");
    if (v == 0) return 0;
    keys = int(v);
  }
  if (major != 9) return 0;
  const int smem = k2k::fp8_attention_prefill_wgmma_smem_bytes(D, DV, keys);
  const bool fits = smem > 0 && smem <= k2k::smem_optin_limit(device);
  TORCH_CHECK_VALUE(fits || env == nullptr, "k2kernels.fp8_kv_attention: K2K_ATTN_PREFILL_WGMMA=", env, " needs ", smem,
                    " B of shared memory; this device allows ", k2k::smem_optin_limit(device));
  return fits ? keys : 0;
}

int layout_id(const k2k::Fp8AttnParams& p) {
  if (p.prefill) {
    if (p.prefill_m_tiles == 2) return k2k::kLayoutPrefill128;
    return p.prefill_warp_split == 4 ? k2k::kLayoutPrefill16 : p.prefill_warp_split == 2 ? k2k::kLayoutPrefill32
                                                                                        : k2k::kLayoutPrefill64;
  }
  return p.rows8 ? k2k::kLayoutRows8 : k2k::kLayoutRows16;
}

// Both ops: (out, lse); lse is [Tq, H_q] fp32 (natural log) when want_lse, else an empty tensor.
std::tuple<at::Tensor, at::Tensor> fp8_kv_attention_impl(
    const at::Tensor& q, const at::Tensor& k_cache, const std::optional<at::Tensor>& v_cache, const at::Tensor& block_table,
    const at::Tensor& seq_lens, const at::Tensor& cu_seqlens_q, const at::Tensor& k_scale,
    const std::optional<at::Tensor>& v_scale, double softmax_scale, bool causal, int64_t max_q_len, int64_t head_dim_v,
    int64_t window_left, bool want_lse) {
  k2k::check_tensor(kAttn, "q", q, at::kBFloat16, 3, "bfloat16 [Tq, H_q, D_qk]");
  k2k::check_tensor(kAttn, "k_cache", k_cache, at::kFloat8_e4m3fn, 4, "float8_e4m3fn [pages, page_size, H_kv, D_qk]");
  const int64_t Tq = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t pages = k_cache.size(0), page_size = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK_VALUE(k_cache.size(3) == D, "k2kernels.fp8_kv_attention: k_cache head dim must equal q's D_qk = ", D,
                    "; got k_cache ", k_cache.sizes());
  TORCH_CHECK_VALUE(Hkv >= 1 && Hq % Hkv == 0, "k2kernels.fp8_kv_attention: H_q = ", Hq,
                    " must be a multiple of H_kv = ", Hkv, " (GQA)");
  int64_t DV;
  if (v_cache.has_value()) {
    k2k::check_tensor(kAttn, "v_cache", *v_cache, at::kFloat8_e4m3fn, 4, "float8_e4m3fn [pages, page_size, H_kv, D_v]");
    TORCH_CHECK_VALUE(v_cache->size(0) == pages && v_cache->size(1) == page_size && v_cache->size(2) == Hkv,
                      "k2kernels.fp8_kv_attention: v_cache must be [", pages, ", ", page_size, ", ", Hkv, ", D_v]; got ",
                      v_cache->sizes());
    TORCH_CHECK_VALUE(v_scale.has_value(), "k2kernels.fp8_kv_attention: v_scale must be a float32 tensor when v_cache is given");
    k2k::check_scale(kAttn, "v_scale", *v_scale, Hkv);
    DV = v_cache->size(3);
  } else {
    TORCH_CHECK_VALUE(head_dim_v > 0 && head_dim_v <= D, "k2kernels.fp8_kv_attention: with v_cache=None (latent cache), head_dim_v must be in (0, ",
                      D, "]; got ", head_dim_v);
    DV = head_dim_v;
  }
  k2k::check_tensor(kAttn, "block_table", block_table, at::kInt, 2, "int32 [B, max_pages]");
  const int64_t B = block_table.size(0);
  k2k::check_tensor(kAttn, "seq_lens", seq_lens, at::kInt, 1, "int32 [B]");
  k2k::check_tensor(kAttn, "cu_seqlens_q", cu_seqlens_q, at::kInt, 1, "int32 [B + 1]");
  TORCH_CHECK_VALUE(seq_lens.size(0) == B && cu_seqlens_q.size(0) == B + 1, "k2kernels.fp8_kv_attention: seq_lens must be int32 [",
                    B, "] and cu_seqlens_q int32 [", B + 1, "] for block_table ", block_table.sizes(), "; got ",
                    seq_lens.sizes(), " and ", cu_seqlens_q.sizes());
  k2k::check_scale(kAttn, "k_scale", k_scale, Hkv);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"k_cache", &k_cache}, {"block_table", &block_table},
                                {"seq_lens", &seq_lens}, {"cu_seqlens_q", &cu_seqlens_q}, {"k_scale", &k_scale}})
    k2k::check_on_device(kAttn, name, *t, q);
  if (v_cache.has_value()) {
    k2k::check_on_device(kAttn, "v_cache", *v_cache, q);
    k2k::check_on_device(kAttn, "v_scale", *v_scale, q);
  }
  TORCH_CHECK_VALUE(k2k::fp8_attention_supported(int(D), int(DV)),
                    "k2kernels.fp8_kv_attention: no CUDA kernel for D_qk = ", D, ", D_v = ", DV,
                    "; supported: (64, 64), (128, 128), (256, 128|256), latent (576, 256|512)");
  TORCH_CHECK_VALUE(pages >= 1 && page_size >= 1, "k2kernels.fp8_kv_attention: k_cache needs at least one page; got ",
                    k_cache.sizes());
  TORCH_CHECK_VALUE(window_left >= -1, "k2kernels.fp8_kv_attention: window_left must be an int >= -1 ",
                    "(-1 = no sliding window); got ", window_left);
  TORCH_CHECK_VALUE(window_left < 0 || causal, "k2kernels.fp8_kv_attention: window_left = ", window_left,
                    " needs causal=True (the sliding window is causal: keys p - window_left .. p); got causal=False");
  check_aligned16("q", q);
  check_aligned16("k_cache", k_cache);
  if (v_cache.has_value()) check_aligned16("v_cache", *v_cache);

  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({Tq, Hq, DV}, q.options());
  auto lse = at::empty({want_lse ? Tq : 0, Hq}, q.options().dtype(at::kFloat));
  if (Tq == 0 || B == 0) return {out.zero_(), lse};
  const int smem = k2k::fp8_attention_smem_bytes(int(D), int(DV));
  TORCH_CHECK_VALUE(smem <= k2k::smem_optin_limit(q.get_device()), "k2kernels.fp8_kv_attention: the D_qk = ", D,
                    " kernel needs ", smem, " B of shared memory; this device allows ", k2k::smem_optin_limit(q.get_device()));

  k2k::Fp8AttnParams p{};
  p.q = reinterpret_cast<const __nv_bfloat16*>(q.data_ptr());
  p.k_cache = reinterpret_cast<const uint8_t*>(k_cache.data_ptr());
  p.v_cache = v_cache.has_value() ? reinterpret_cast<const uint8_t*>(v_cache->data_ptr()) : p.k_cache;
  p.block_table = block_table.data_ptr<int32_t>();
  p.seq_lens = seq_lens.data_ptr<int32_t>();
  p.cu_seqlens_q = cu_seqlens_q.data_ptr<int32_t>();
  p.k_scale = k_scale.data_ptr<float>();
  const at::Tensor& vs = v_cache.has_value() ? *v_scale : k_scale;   // latent: V is K, so is its scale
  p.v_scale = vs.data_ptr<float>();
  p.k_per_head = k_scale.numel() > 1;
  p.v_per_head = vs.numel() > 1;
  p.v_head_stride = v_cache.has_value() ? DV : D;
  p.v_slot_stride = Hkv * p.v_head_stride;
  p.softmax_scale_log2 = float(softmax_scale * 1.4426950408889634);
  p.Tq = int(Tq); p.B = int(B); p.Hq = int(Hq); p.Hkv = int(Hkv); p.group = int(Hq / Hkv);
  p.D = int(D); p.DV = int(DV);
  p.page_size = int(page_size);
  p.page_shift = (page_size & (page_size - 1)) == 0 ? int(std::log2(double(page_size)) + 0.5) : -1;
  p.max_pages = int(block_table.size(1));
  p.num_pages = int(pages);
  p.causal = causal ? 1 : 0;
  // No window = an unbounded one: the kernels test unsigned(pos - key) <= window_left, one compare for both edges.
  p.window_left = window_left < 0 ? INT_MAX : int(std::min<int64_t>(window_left, INT_MAX));
  // Rows per (sequence, KV head) = q_len * group; the grid covers the host's estimate of the largest
  // q_len (the hint, else 1 when Tq == B, else Tq) and the kernel loops over any rows beyond it.
  const int64_t q_est = max_q_len > 0 ? std::min(max_q_len, Tq) : (Tq == B ? 1 : Tq);
  // Layout (docs/attention.md), by host-known shapes; each K2K_ATTN_* variable forces its layout on (1)
  // or off (0). Defaults from the H200 run of 2026-11-29 (benchmarks/RESULTS.md, GQA 64/8 D 128):
  //   rows8 (keys on the MMA's M side) for decode with group <= 8: B=32 ctx 8K 182.8 vs 204.1 us,
  //     B=8 54.4 vs 67.6, B=1 25.2 vs 28.3, B=32 ctx 32K 702 vs 802 (4-warp rows8; with 6 warps, sixth
  //     session: B=32 8K 145-159 us, 32K 587 us);
  //   prefill (FA2 CTAs, K/V in smem) for q_len > 1 with D = D_v in {64, 128}: 8K causal 5.27 vs
  //     11.13 ms with 64-row CTAs; 128-row CTAs (seventh session) 4.37-4.44 ms, 512 tokens 51.8 us;
  //     also (one m16 tile per warp, key splits) for decode with GQA groups >= 32 (see below);
  //   latent (8-warp MLA, D 576 / D_v 512) from 8 sequences: B=32 275 vs 534 us, B=8 97.8 vs 158.6;
  //     at B=1 it is slower (93.7 vs 59.3), so small batches keep the 16-row layout.
  // Otherwise the 16-row layout.
  auto knob = [](const char* name) -> int {        // -1 unset, else 0 / 1
    const char* env = std::getenv(name);
    return env == nullptr ? -1 : (std::atoi(env) != 0 ? 1 : 0);
  };
  const bool decode = q_est == 1;
  const int k_rows8 = knob("K2K_ATTN_ROWS8"), k_prefill = knob("K2K_ATTN_PREFILL"), k_latent = knob("K2K_ATTN_LATENT");
  const bool latent_ok = k2k::fp8_attention_latent_supported(int(D), int(DV));
  const bool prefill_ok = k2k::fp8_attention_prefill_supported(int(D), int(DV));
  p.rows8 = p.prefill = p.latent = 0;
  if (k_rows8 == 1) {                               // forced layouts first (tests, benchmarks)
    p.rows8 = 1;
  } else if (k_latent == 1 && latent_ok) {
    p.latent = 1;
  } else if (k_prefill == 1 && prefill_ok) {
    p.prefill = 1;
  } else {                                          // defaults; a knob set to 0 rules its layout out
    p.latent = k_latent != 0 && latent_ok && decode && B >= 8;
    // decode with GQA groups >= 32: the prefill layout (one CTA converts its KV head's K/V once for the
    // whole group; the 16-row layout converts it once per 16 heads and is compute-bound there) when the
    // grid has enough (sequence, KV head) pairs: kPrefillDecodeMinHeads. Not for groups <= 16, even with
    // the warp key split: B 32 8K group 16 225.6 vs 211 us (16-row), group 8 234.8 vs 158 (rows8).
    p.prefill = !p.latent && k_prefill != 0 && prefill_ok &&
                (!decode || (p.group >= 32 && B * Hkv >= kPrefillDecodeMinHeads));
    p.rows8 = !p.latent && !p.prefill && k_rows8 != 0 && decode && p.group <= 8;
  }
  // prefill layout: 128-row CTAs (two m16 tiles per warp) for q_len > 1; one m16 tile per warp for
  // decode, where a KV head has only its group's rows: 64-row CTAs, or for groups <= 32 / <= 16 32- / 16-row
  // CTAs whose 2 / 4 warps per row tile split each chunk's keys (no idle warps).
  p.prefill_m_tiles = p.prefill ? (decode ? 1 : 2) : 0;
  p.prefill_warp_split = !p.prefill || !decode ? 1 : p.group <= 16 ? 4 : p.group <= 32 ? 2 : 1;
  p.prefill_wgmma = p.prefill_m_tiles == 2 ? prefill_wgmma_keys(int(D), int(DV), q.get_device()) : 0;
  const int rows_per_tile = p.prefill ? 64 * p.prefill_m_tiles / p.prefill_warp_split : p.latent ? 64 : p.rows8 ? 8 : 16;
  p.row_tiles = int(std::max<int64_t>(1, (q_est * p.group + rows_per_tile - 1) / rows_per_tile));
  const int dvc = k2k::fp8_attention_dv_chunk(int(D), int(DV));
  p.dv_chunks = (p.prefill || p.latent) ? 1 : int(DV / dvc);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, q.get_device());   // an attribute query, no sync
  const int64_t capacity = int64_t(sms) * (p.latent ? k2k::fp8_attention_latent_ctas_per_sm(q.get_device())
                                                      : k2k::fp8_attention_ctas_per_sm(int(D), layout_id(p), q.get_device()));
  // Keys one row tile can see: the cache bound, or with a window its w + 1 keys per token plus one per
  // further token of the tile (at most min(q_len, rows per tile) tokens), so splits follow the window.
  int64_t key_bound = int64_t(p.max_pages) * page_size;
  // (p.window_left: clamped to INT_MAX above, so the sum cannot overflow for any window_left the check admits)
  if (window_left >= 0) key_bound = std::min(key_bound, int64_t(p.window_left) + std::min<int64_t>(q_est, rows_per_tile));
  // The prefill layout splits keys for decode; with q_len > 1 it keeps one split unless K2K_ATTN_SPLITS
  // forces a count (tests) — splitting chunked prefill is not measured.
  const bool one_split = p.prefill && !decode && forced_splits() == 0;
  p.num_splits = one_split ? 1 : choose_splits(B * Hkv * p.row_tiles * p.dv_chunks, key_bound, capacity);
  at::Tensor part_o, part_lse;
  if (p.num_splits > 1) {
    part_o = at::empty({p.num_splits, Tq, Hq, DV}, q.options().dtype(at::kFloat));
    part_lse = at::empty({p.num_splits, Tq, Hq}, q.options().dtype(at::kFloat));
    p.part_o = part_o.data_ptr<float>();
    p.part_lse = part_lse.data_ptr<float>();
  }
  p.out = reinterpret_cast<__nv_bfloat16*>(out.data_ptr());
  p.lse = want_lse ? lse.data_ptr<float>() : nullptr;
  const cudaError_t err = k2k::launch_fp8_attention(p, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "k2kernels.fp8_kv_attention: launch failed: ", cudaGetErrorString(err));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, lse};
}

at::Tensor fp8_kv_attention_cuda(const at::Tensor& q, const at::Tensor& k_cache, const std::optional<at::Tensor>& v_cache,
                                 const at::Tensor& block_table, const at::Tensor& seq_lens, const at::Tensor& cu_seqlens_q,
                                 const at::Tensor& k_scale, const std::optional<at::Tensor>& v_scale, double softmax_scale,
                                 bool causal, int64_t max_q_len, int64_t head_dim_v, int64_t window_left) {
  return std::get<0>(fp8_kv_attention_impl(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale,
                                           softmax_scale, causal, max_q_len, head_dim_v, window_left, false));
}

std::tuple<at::Tensor, at::Tensor> fp8_kv_attention_lse_cuda(
    const at::Tensor& q, const at::Tensor& k_cache, const std::optional<at::Tensor>& v_cache, const at::Tensor& block_table,
    const at::Tensor& seq_lens, const at::Tensor& cu_seqlens_q, const at::Tensor& k_scale,
    const std::optional<at::Tensor>& v_scale, double softmax_scale, bool causal, int64_t max_q_len, int64_t head_dim_v,
    int64_t window_left) {
  return fp8_kv_attention_impl(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, k_scale, v_scale, softmax_scale,
                               causal, max_q_len, head_dim_v, window_left, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) {
  m.impl("kv_cache_append", &kv_cache_append_cuda);
  m.impl("fp8_kv_attention", &fp8_kv_attention_cuda);
  m.impl("fp8_kv_attention_lse", &fp8_kv_attention_lse_cuda);
}
