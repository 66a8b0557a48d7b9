// torch bindings of the moe_gemm family: checks inputs (same messages as k2kernels/_checks.py and
// reference/moe_gemm.py:check_moe_gemm), picks a kernel config by host-known shapes only (no sync on
// the device-side offsets), and launches on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "common/smem_limit.h"
#include "common/torch_checks.h"
#include "moe_gemm/moe_gemm.h"

namespace {

constexpr const char* kOp = "moe_gemm";
constexpr int64_t kMaxExperts = 2048;      // moe_gemm_stream.cuh: kMaxExpertWords * 32

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

bool aligned(const void* ptr, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// `a` is one row expanded to all M > 1 rows (row stride 0: fused_moe at T = 1, whose top-k rows are all
// the one token's). The only non-contiguous `a` moe_gemm accepts; the bulk kernel reads it in place,
// every other path gets the rows materialized.
bool is_broadcast_row(const at::Tensor& a) {
  return a.dim() == 2 && a.size(0) > 1 && a.stride(0) == 0 && a.stride(1) == 1;
}

// Mean rows per expert with rows, which the host knows without reading the offsets (M rows over at
// most min(E, M) experts): every kernel choice below is made from it.
double mean_rows(int64_t M, int64_t E) {
  const int64_t slots = M < E ? M : E;
  return slots ? static_cast<double>(M) / static_cast<double>(slots) : 0.0;
}

// Tokens per pass of the streaming kernel (8 * nt). Larger nt reads the weights fewer times for big
// experts but stages more activations per step.
int pick_nt(double mean) {
  if (mean <= 4.0) return 1;
  if (mean <= 12.0) return 2;
  if (mean <= 24.0) return 4;
  return 8;
}

// Kernel-choice knobs, read per call (so at capture time under CUDA graphs); tuning and tests only:
// K2K_MOE_GEMM_KERNEL = bulk | persist | pipe | tile | wgmma forces a kernel (bulk: tiled layout on sm_90+,
// wgmma: tiled layout on sm_90, else the default choice; a bulk or tile that cannot run falls to the
// streaming kernels; persist: passes of <= 32 tokens, pipe for 64),
// K2K_MOE_GEMM_CFG = m64 | m128 the tile kernel's height, t4 | t8 the bulk kernel's tokens per pass,
// w64 | w96 | w128 the wgmma kernel's token tile. Unknown values are an error.
struct Knobs {
  std::string kernel = "auto", cfg;
};

Knobs read_knobs() {
  Knobs k;
  if (const char* v = std::getenv("K2K_MOE_GEMM_KERNEL")) k.kernel = v;
  if (const char* c = std::getenv("K2K_MOE_GEMM_CFG")) k.cfg = c;
  TORCH_CHECK_VALUE(k.kernel == "auto" || k.kernel == "bulk" || k.kernel == "persist" || k.kernel == "pipe" ||
                        k.kernel == "tile" || k.kernel == "wgmma",
                    "k2kernels.moe_gemm: K2K_MOE_GEMM_KERNEL must be one of bulk, persist, pipe, tile, wgmma (or unset); got '",
                    k.kernel, "'");
  TORCH_CHECK_VALUE(k.cfg.empty() || k.cfg == "m64" || k.cfg == "m128" || k.cfg == "t4" || k.cfg == "t8" ||
                        k.cfg == "w64" || k.cfg == "w96" || k.cfg == "w128",
                    "k2kernels.moe_gemm: K2K_MOE_GEMM_CFG must be one of m64, m128, t4, t8, w64, w96, w128 (or unset); got '",
                    k.cfg, "'");
  return k;
}

// The bulk-copy decode kernel: by default where the streaming kernels would make 8-token passes (a mean
// of <= 4 rows per expert); it declines (and the persistent kernel runs) on layouts other than tiled and
// before sm_90. 4-token passes up to a mean of 2 rows: half the activation stage, 4 CTAs per SM instead of
// 3 (H200, 2026-11-29: 8-token passes left 512 units of gate_up T=1 on 396 CTAs, a 1.3-wave tail).
bool use_bulk(int nt, const Knobs& k) { return k.kernel == "bulk" || (k.kernel == "auto" && nt == 1); }
int bulk_tokens(double mean, const Knobs& k) {
  if (k.cfg == "t4" || k.cfg == "t8") return k.cfg == "t4" ? 4 : 8;
  return mean <= 2.0 ? 4 : 8;
}

// Token rows per CTA of the prefill tile kernel, or 0 for the streaming kernels. Default: the tile
// kernel once the mean rows per expert with rows exceed 24 (where the streaming kernels would make
// 64-token passes), 128-token tiles from a mean of 48 (H200, gate_up E=384 top-8: mean 85 rows
// (T=4096) 8.8 ms with 128-token tiles vs 12.7 ms with 64; mean 21 (T=1024): 6.4 ms with 64 vs 8.6 ms
// with 128).
int tile_rows(double mean, const Knobs& k) {
  if (k.kernel != "tile" && (k.kernel != "auto" || mean <= 24.0)) return 0;
  if (k.cfg == "m64") return 64;
  if (k.cfg == "m128") return 128;
  return mean >= 48.0 ? 128 : 64;
}

// Token tile of the sm_90a wgmma prefill kernel, or 0 for the other kernels. Default: from a mean of
// > 12 rows per expert (where the streaming kernels would make 32-token passes), the smallest of 64 / 96
// / 128 tokens holding the mean (fewer padding columns). H200, 2026-11-29 (benchmarks/RESULTS.md, tenth
// session), gate_up E=384 top-8: mean 10.7 (T=512) streaming 3.4 ms vs wgmma 4.6; mean 21 (T=1024)
// streaming 5.9 ms vs 64-token wgmma 4.7; mean 85 (T=4096) 96-token 5.7 ms vs 128-token 5.9 vs the tile
// kernel 9.0; mean 341 (T=16384) 128-token 18.5 ms vs 96-token 22.1.
int wgmma_tokens(double mean, const Knobs& k) {
  if (k.kernel != "wgmma" && (k.kernel != "auto" || mean <= 12.0)) return 0;
  if (k.cfg == "w64" || k.cfg == "w96" || k.cfg == "w128") return k.cfg == "w64" ? 64 : (k.cfg == "w96" ? 96 : 128);
  return mean <= 64.0 ? 64 : (mean <= 96.0 ? 96 : 128);
}

// The persistent kernel for passes of 8-32 tokens (nt <= 4), the pipelined one for 64-token passes.
int stream_variant(int nt, const Knobs& k) {
  return k.kernel == "pipe" || nt > 4 ? k2k::kStreamPipe : k2k::kStreamPersist;
}

void check_inputs(const at::Tensor& a, const at::Tensor& w, const at::Tensor& w_scale, const at::Tensor& w_alpha,
                  const at::Tensor& offsets, const std::string& act, const std::optional<at::Tensor>& a_scale,
                  const std::string& scale_layout) {
  // a: contiguous, or a broadcast row (its one row is checked)
  k2k::check_tensor(kOp, "a", is_broadcast_row(a) ? a.narrow(0, 0, 1) : a, at::kBFloat16, 2,
                    "bfloat16 [M, K] (contiguous, or one row expanded to M rows)");
  k2k::check_tensor(kOp, "w", w, at::kByte, 3, "uint8 [E, N, K/2] (packed e2m1)");
  const int64_t K = a.size(1), E = w.size(0), N = w.size(1);
  TORCH_CHECK_VALUE(K % 16 == 0 && w.size(2) * 2 == K, "k2kernels.moe_gemm: w must be uint8 [E, N, K/2] with K = a.shape[1] = ",
                    K, " (a multiple of 16); got w ", w.sizes());
  TORCH_CHECK_VALUE(scale_layout == "linear" || scale_layout == "swizzled" || scale_layout == "tiled",
                    "k2kernels.moe_gemm: scale_layout must be one of ('linear', 'swizzled', 'tiled'); got '", scale_layout, "'");
  TORCH_CHECK_VALUE(scale_layout != "tiled" || (N % 64 == 0 && K % 512 == 0),
                    "k2kernels.moe_gemm: scale_layout='tiled' needs N % 64 == 0 and K % 512 == 0; got N=", N, ", K=", K);
  const bool swz = scale_layout == "swizzled";
  const int64_t s1 = swz ? round_up(N, 128) : N, s2 = swz ? round_up(K / 16, 4) : K / 16;
  const std::string want = "float8_e4m3fn [" + std::to_string(E) + ", " + std::to_string(s1) + ", " + std::to_string(s2) +
                           "] (" + scale_layout + ")";
  k2k::check_tensor(kOp, "w_scale", w_scale, at::kFloat8_e4m3fn, 3, want.c_str());
  TORCH_CHECK_VALUE(w_scale.size(0) == E && w_scale.size(1) == s1 && w_scale.size(2) == s2, "k2kernels.moe_gemm: w_scale must be ",
                    want, "; got ", w_scale.sizes());
  const std::string want_alpha = "float32 [" + std::to_string(E) + "]";
  k2k::check_tensor(kOp, "w_alpha", w_alpha, at::kFloat, 1, want_alpha.c_str());
  TORCH_CHECK_VALUE(w_alpha.size(0) == E, "k2kernels.moe_gemm: w_alpha must be float32 [", E,
                    "] (one global scale per expert); got ", w_alpha.sizes());
  const std::string want_off = "int32 [" + std::to_string(E + 1) + "]";
  k2k::check_tensor(kOp, "expert_offsets", offsets, at::kInt, 1, want_off.c_str());
  TORCH_CHECK_VALUE(offsets.size(0) == E + 1, "k2kernels.moe_gemm: expert_offsets must be int32 [", E + 1, "] (E + 1 for E = ", E,
                    "); got ", offsets.sizes());
  TORCH_CHECK_VALUE(act == "bf16" || act == "nvfp4", "k2kernels.moe_gemm: act must be one of ('bf16', 'nvfp4'); got '", act, "'");
  if (act == "nvfp4") {
    TORCH_CHECK_VALUE(a_scale.has_value(), "k2kernels.moe_gemm: a_scale must be a tensor; got None");
    k2k::check_scale(kOp, "a_scale", *a_scale, E);
    k2k::check_on_device(kOp, "a_scale", *a_scale, a);
  } else {
    TORCH_CHECK_VALUE(!a_scale.has_value(), "k2kernels.moe_gemm: a_scale is only used with act='nvfp4'; pass None for act='bf16'");
  }
  k2k::check_on_device(kOp, "w", w, a);
  k2k::check_on_device(kOp, "w_scale", w_scale, a);
  k2k::check_on_device(kOp, "w_alpha", w_alpha, a);
  k2k::check_on_device(kOp, "expert_offsets", offsets, a);
  TORCH_CHECK_VALUE(E >= 1 && E <= kMaxExperts, "k2kernels.moe_gemm: the CUDA kernel supports 1 <= E <= ", kMaxExperts, "; got E = ", E);
  TORCH_CHECK_VALUE(a.size(0) < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31),
                    "k2kernels.moe_gemm: M, N and K must each be < 2^31; got ", a.sizes(), " and w ", w.sizes());
  TORCH_CHECK_VALUE(N <= int64_t(65535) * 128, "k2kernels.moe_gemm: the CUDA kernel supports N <= 8388480; got N = ", N);
}

// act="nvfp4" on SM12x: the native CUTLASS W4A4 kernel (family cutlass_sm120, op moe_gemm_w4a4_sm120,
// same semantics with swizzled scales) when its library is loaded. The library is detected by its
// exported SMEM-budget table, not by "the op has a CUDA kernel": the Python registry gives ops without
// a built kernel a reference fallback on CUDA, which would sync and break graph capture.
std::optional<at::Tensor> try_sm120_w4a4(const at::Tensor& a, const at::Tensor& w, const at::Tensor& w_scale,
                                         const at::Tensor& w_alpha, const at::Tensor& offsets, const at::Tensor& a_scale) {
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, a.get_device());
  if (major != 12 || dlsym(RTLD_DEFAULT, "k2k_smem_budgets_cutlass_sm120") == nullptr) return std::nullopt;
  const at::Tensor a_rows = is_broadcast_row(a) ? a.contiguous() : a;   // that op wants rows
  auto handle = c10::Dispatcher::singleton().findSchema({"k2kernels::moe_gemm_w4a4_sm120", ""});
  if (!handle.has_value() || !handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) return std::nullopt;
  return handle
      ->typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, c10::string_view)>()
      .call(a_rows, w, w_scale, w_alpha, offsets, a_scale, "auto");
}

at::Tensor moe_gemm_cuda(const at::Tensor& a, const at::Tensor& w, const at::Tensor& w_scale, const at::Tensor& w_alpha,
                         const at::Tensor& expert_offsets, c10::string_view act_sv, const std::optional<at::Tensor>& a_scale,
                         c10::string_view layout_sv) {
  const std::string act(act_sv), scale_layout(layout_sv);
  check_inputs(a, w, w_scale, w_alpha, expert_offsets, act, a_scale, scale_layout);
  Knobs knobs = read_knobs();
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t M = a.size(0), K = a.size(1), E = w.size(0), N = w.size(1);
  if (act == "nvfp4" && scale_layout == "swizzled") {
    if (auto native = try_sm120_w4a4(a, w, w_scale, w_alpha, expert_offsets, *a_scale)) return *native;
  }
  auto out = at::empty({M, N}, a.options());
  if (M == 0 || N == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  k2k::MoeGemmParams p{};
  p.a = reinterpret_cast<const __nv_bfloat16*>(a.data_ptr());
  p.lda = is_broadcast_row(a) ? 0 : K;
  // Only the bulk kernel reads a broadcast row as such; every other path gets the rows materialized
  // (the copy fused_moe's gather would have made).
  at::Tensor a_dense;
  auto densify = [&]() {
    if (p.lda == K) return;
    a_dense = a.contiguous();
    p.a = reinterpret_cast<const __nv_bfloat16*>(a_dense.data_ptr());
    p.lda = K;
  };
  at::Tensor a_q;
  if (act == "nvfp4") {
    densify();
    // W4A4 emulation (SM120's numerics on any GPU): rows quantized per expert, a_scale in the epilogue.
    a_q = at::empty({M, K}, a.options());
    k2k::launch_moe_act_fake_quant(p.a, a_scale->data_ptr<float>(), a_scale->numel() > 1, expert_offsets.data_ptr<int32_t>(),
                                   static_cast<int>(E), M, static_cast<int>(K), reinterpret_cast<__nv_bfloat16*>(a_q.data_ptr()),
                                   stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    p.a = reinterpret_cast<const __nv_bfloat16*>(a_q.data_ptr());
    p.a_scale = a_scale->data_ptr<float>();
    p.a_scale_per_expert = a_scale->numel() > 1;
  }
  p.w = w.data_ptr<uint8_t>();
  p.w_scale = reinterpret_cast<const uint8_t*>(w_scale.data_ptr());
  p.w_alpha = w_alpha.data_ptr<float>();
  p.expert_offsets = expert_offsets.data_ptr<int32_t>();
  p.out = reinterpret_cast<__nv_bfloat16*>(out.data_ptr());
  p.M = M;
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.E = static_cast<int>(E);
  p.scale_layout = scale_layout == "swizzled" ? k2k::kScaleSwizzled : (scale_layout == "tiled" ? k2k::kTiled : k2k::kScaleLinear);
  p.n_pad = static_cast<int>(w_scale.size(1));
  p.kb_pad = static_cast<int>(w_scale.size(2));

  // The tile and streaming kernels read 16-byte vectors of a and w and 4- to 16-byte scale groups;
  // the tile kernel needs K % 64 == 0, the streaming kernels K % 128 == 0 (bulk: the tiled layout,
  // K % 512 == 0); anything else: generic.
  if (!aligned(p.a, 16)) densify();                     // an unaligned broadcast row: its copy is aligned
  const bool aligned16 = aligned(p.a, 16) && aligned(p.w, 16) && aligned(p.w_scale, 16);
  bool launched = false;
  const int limit = k2k::smem_optin_limit(a.get_device());
  const double mean = mean_rows(M, E);
  const int nt_pick = pick_nt(mean);
  if (aligned16 && p.scale_layout == k2k::kTiled) {
    const int tokens = wgmma_tokens(mean, knobs);
    if (tokens > 0) {
      densify();
      launched = k2k::launch_moe_gemm_wgmma(p, tokens, limit, stream);   // false off sm_90
    }
  }
  // A forced wgmma kernel that could not run: the default choice among the others.
  if (knobs.kernel == "wgmma") knobs = Knobs{};
  if (aligned16 && K % 64 == 0 && !launched) {
    const int bm = tile_rows(mean, knobs);
    if (bm > 0) {
      densify();
      launched = k2k::launch_moe_gemm_tile(p, bm, limit, stream);
    }
  }
  if (aligned16 && !launched && use_bulk(nt_pick, knobs)) {
    launched = k2k::launch_moe_gemm_bulk(p, bulk_tokens(mean, knobs), limit, stream);
  }
  if (!launched) densify();
  if (aligned16 && K % 128 == 0 && !launched) {
    for (int nt = nt_pick; nt >= 1 && !launched; nt /= 2) {   // a config over the SMEM limit: smaller nt
      const int variant = stream_variant(nt, knobs);
      launched = k2k::launch_moe_gemm_stream(p, nt, variant, limit, stream);
    }
  }
  if (!launched) k2k::launch_moe_gemm_generic(p, stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) { m.impl("moe_gemm", &moe_gemm_cuda); }
