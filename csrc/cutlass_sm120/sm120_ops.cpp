// torch binding of moe_gemm_w4a4_sm120 (cutlass_sm120 family): the SM120 native W4A4 MoE GEMM.
//   1. quantize_nvfp4_experts (quant family, called through the dispatcher): BF16 rows -> packed
//      e2m1 + 128x4-swizzled e4m3 scales at each expert's 128-row-aligned block + sf_offsets;
//   2. w4a4_problem_setup: per-expert CUTLASS argument arrays from the device offsets;
//   3. the CUTLASS ptr-array block-scaled grouped GEMM of the chosen tile config.
// No host sync anywhere (problem shapes stay on the device), so the op is graph-capturable.
// Compiled and checked for sm_120a; not run on SM120 hardware (docs/sm120.md).
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <cstring>
#include <string>

#include "common/smem_limit.h"
#include "common/torch_checks.h"
#include "cutlass_sm120/w4a4_types.h"

namespace {

using namespace k2k::sm120;

struct ConfigEntry {
  const char* name;
  W4A4TileInfo (*info)();
  size_t (*workspace)(const W4A4Problem&, const W4A4SetupArrays&);
  const char* (*run)(const W4A4Problem&, const W4A4SetupArrays&, void*, cudaStream_t);
};

#define K2K_W4A4_ENTRY(NAME) ConfigEntry{#NAME, &w4a4_info_##NAME, &w4a4_workspace_##NAME, &w4a4_run_##NAME},
const ConfigEntry kConfigs[] = {K2K_W4A4_FOR_EACH_CONFIG(K2K_W4A4_ENTRY)};
#undef K2K_W4A4_ENTRY

std::string config_names() {
  std::string s = "'auto'";
  for (const auto& c : kConfigs) s += std::string(", '") + c.name + "'";
  return s;
}

// "auto": untuned (no SM120 GPU to measure on). 128x128 is the smallest tile CUTLASS 4.2 can build
// for SM120 block-scaled operands and wastes least on decode-sized experts; the 256-row tile halves
// the weight re-reads once the average expert has at least 256 rows (prefill).
const ConfigEntry& pick_config(const std::string& config, int64_t M, int64_t E) {
  if (config == "auto") {
    const bool big = E > 0 && M / E >= 256;
    return kConfigs[big ? 2 : 0];
  }
  for (const auto& c : kConfigs)
    if (config == c.name) return c;
  TORCH_CHECK_VALUE(false, "k2kernels.moe_gemm_w4a4_sm120: config must be one of ", config_names(), "; got '", config, "'");
  return kConfigs[0];   // unreachable
}

at::Tensor moe_gemm_w4a4_sm120_cuda(const at::Tensor& a, const at::Tensor& w, const at::Tensor& w_scale,
                                    const at::Tensor& w_alpha, const at::Tensor& expert_offsets,
                                    const at::Tensor& a_scale, c10::string_view config_sv) {
  constexpr const char* op = "moe_gemm_w4a4_sm120";
  const std::string config(config_sv.data(), config_sv.size());
  k2k::check_tensor(op, "a", a, at::kBFloat16, 2, "bfloat16 [M, K]");
  k2k::check_tensor(op, "w", w, at::kByte, 3, "uint8 [E, N, K/2] (packed e2m1)");
  const int64_t M = a.size(0), K = a.size(1), E = w.size(0), N = w.size(1);
  TORCH_CHECK_VALUE(K % 128 == 0 && w.size(2) * 2 == K, "k2kernels.", op,
                    ": needs K % 128 == 0 (the SM120 kernel's K tile) and w [E, N, K/2] with K = a.shape[1]; got a ",
                    k2k::describe(a), ", w ", k2k::describe(w));
  TORCH_CHECK_VALUE(N % 8 == 0, "k2kernels.", op, ": needs N % 8 == 0 (16-byte aligned bf16 output rows); got N=", N);
  const int64_t n_pad = (N + 127) / 128 * 128, kb_pad = (K / 16 + 3) / 4 * 4;
  k2k::check_tensor(op, "w_scale", w_scale, at::kFloat8_e4m3fn, 3, "float8_e4m3fn [E, pad128(N), pad4(K/16)] (swizzled)");
  TORCH_CHECK_VALUE(w_scale.size(0) == E && w_scale.size(1) == n_pad && w_scale.size(2) == kb_pad, "k2kernels.", op,
                    ": w_scale must be float8_e4m3fn [", E, ", ", n_pad, ", ", kb_pad,
                    "] (128x4 swizzled, nvfp4.swizzle_scales); got ", k2k::describe(w_scale));
  k2k::check_tensor(op, "w_alpha", w_alpha, at::kFloat, 1, "float32 [E]");
  TORCH_CHECK_VALUE(w_alpha.numel() == E, "k2kernels.", op, ": w_alpha must be float32 [", E, "]; got ", k2k::describe(w_alpha));
  k2k::check_tensor(op, "expert_offsets", expert_offsets, at::kInt, 1, "int32 [E+1]");
  TORCH_CHECK_VALUE(expert_offsets.numel() == E + 1, "k2kernels.", op, ": expert_offsets must be int32 [", E + 1,
                    "]; got ", k2k::describe(expert_offsets));
  k2k::check_scale(op, "a_scale", a_scale, E);
  for (const auto* t : {&w, &w_scale, &w_alpha, &expert_offsets, &a_scale}) k2k::check_on_device(op, "every input", *t, a);
  for (const auto* t : {&a, &w, &w_scale})
    TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(t->data_ptr()) % 128 == 0, "k2kernels.", op,
                      ": a, w and w_scale must be 128-byte aligned (TMA bases); pass fresh tensors, not offset views");
  const ConfigEntry& cfg = pick_config(config, M, E);

  const c10::cuda::CUDAGuard guard(a.device());
  const int dev = a.get_device();
  int major = 0, minor = 0, sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
  TORCH_CHECK_NOT_IMPLEMENTED(major == 12, "k2kernels.", op, ": needs an SM120/SM121 GPU (sm_120a build); this is sm_",
                              major, minor, ". Use moe_gemm(act='nvfp4'), which emulates the same numerics");
  const W4A4TileInfo info = cfg.info();
  const int smem_cap = k2k::smem_optin_limit(dev);
  TORCH_CHECK(info.total_smem_bytes <= smem_cap, "k2kernels.", op, ": config ", info.name, " needs ", info.total_smem_bytes,
              " B of shared memory; this device (or K2K_SMEM_LIMIT) allows ", smem_cap);

  auto out = at::empty({M, N}, a.options());
  if (M == 0 || N == 0 || E == 0) return out.zero_();

  // 1. Activations -> NVFP4 in the per-expert swizzled layout (device-side offsets, no sync).
  // The quant family's library must be loaded: otherwise the dispatcher would route this call to the
  // Python reference fallback, which syncs and breaks graph capture. Every family library exports
  // its SMEM-budget table, so its symbol tells whether the library is there.
  TORCH_CHECK(dlsym(RTLD_DEFAULT, "k2k_smem_budgets_quant") != nullptr, "k2kernels.", op,
              ": needs the 'quant' kernel family (quantize_nvfp4_experts) loaded; include it in K2K_FAMILIES");
  static auto quant = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("k2kernels::quantize_nvfp4_experts", "")
                          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                              const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  auto [a_q, a_sf, sf_offsets] = quant.call(a, a_scale, expert_offsets, std::nullopt);

  W4A4Problem p{};
  p.a = a_q.data_ptr<uint8_t>();
  p.a_sf = reinterpret_cast<const uint8_t*>(a_sf.data_ptr());
  p.sf_offsets = sf_offsets.data_ptr<int32_t>();
  p.w = w.data_ptr<uint8_t>();
  p.w_sf = reinterpret_cast<const uint8_t*>(w_scale.data_ptr());
  p.w_alpha = w_alpha.data_ptr<float>();
  p.a_scale = a_scale.data_ptr<float>();
  p.a_scale_numel = static_cast<int>(a_scale.numel());
  p.expert_offsets = expert_offsets.data_ptr<int32_t>();
  p.d = out.data_ptr();
  p.M = M;
  p.N = N;
  p.K = K;
  p.E = static_cast<int>(E);
  p.sm_count = sm_count;

  // 2. One workspace from the caching allocator (graph-safe): per-expert arrays + CUTLASS's own.
  const size_t setup_bytes = w4a4_setup_bytes(p.E);
  const size_t gemm_bytes = cfg.workspace(p, W4A4SetupArrays{});
  auto workspace = at::empty({static_cast<int64_t>(setup_bytes + gemm_bytes)}, a.options().dtype(at::kByte));
  const W4A4SetupArrays arrays = w4a4_carve_setup(workspace.data_ptr(), p.E);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(w4a4_problem_setup(p, arrays, stream));
  C10_CUDA_CHECK(w4a4_zero_tail_rows(p, stream));

  // 3. The grouped GEMM.
  const char* err = cfg.run(p, arrays, static_cast<char*>(workspace.data_ptr()) + setup_bytes, stream);
  TORCH_CHECK(err == nullptr, "k2kernels.", op, " (", info.name, "): ", err ? err : "");
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) { m.impl("moe_gemm_w4a4_sm120", &moe_gemm_w4a4_sm120_cuda); }
