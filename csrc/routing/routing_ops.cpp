// torch bindings of the routing family (topk_router, moe_align): check inputs with the messages of
// k2kernels/reference/{router,align}.py, allocate, launch on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/torch_checks.h"
#include "routing/moe_align.h"
#include "routing/topk_router.h"

namespace {

constexpr const char* kRouter = "topk_router";
constexpr const char* kAlign = "moe_align";

std::tuple<at::Tensor, at::Tensor> topk_router_cuda(const at::Tensor& logits, const std::optional<at::Tensor>& bias,
                                                    int64_t top_k, c10::string_view scoring, int64_t n_group,
                                                    int64_t topk_group, bool renormalize,
                                                    double routed_scaling_factor) {
  const auto dt = logits.scalar_type();
  TORCH_CHECK_VALUE((dt == at::kFloat || dt == at::kBFloat16) && logits.dim() == 2,
                    "k2kernels.topk_router: logits must be float32/bfloat16 [T, E]; got ", k2k::describe(logits));
  TORCH_CHECK_VALUE(logits.is_contiguous(), "k2kernels.topk_router: logits must be contiguous; got strides ",
                    logits.strides(), " for shape ", logits.sizes());
  const int64_t T = logits.size(0), E = logits.size(1);
  TORCH_CHECK_VALUE(E >= 1 && E <= 1024, "k2kernels.topk_router: logits must have 1 <= E <= 1024 experts; got E=", E);
  if (bias.has_value()) {
    const std::string want = "float32 [" + std::to_string(E) + "]";
    k2k::check_tensor(kRouter, "bias", *bias, at::kFloat, 1, want.c_str());
    TORCH_CHECK_VALUE(bias->size(0) == E, "k2kernels.topk_router: bias must be ", want, "; got ", bias->sizes());
  }
  TORCH_CHECK_VALUE(scoring == "softmax" || scoring == "sigmoid",
                    "k2kernels.topk_router: scoring must be one of ('softmax', 'sigmoid'); got '", std::string(scoring), "'");
  TORCH_CHECK_VALUE(n_group >= 1 && E % n_group == 0, "k2kernels.topk_router: n_group must divide E = ", E,
                    "; got n_group=", n_group);
  TORCH_CHECK_VALUE(topk_group >= 1 && topk_group <= n_group, "k2kernels.topk_router: topk_group must be in [1, n_group=",
                    n_group, "]; got ", topk_group);
  const int64_t allowed = std::min<int64_t>(16, topk_group * (E / n_group));
  TORCH_CHECK_VALUE(top_k >= 1 && top_k <= allowed, "k2kernels.topk_router: top_k must be in [1, ", allowed,
                    "] (<= 16 and <= experts in the kept groups); got ", top_k);
  if (bias.has_value()) k2k::check_on_device(kRouter, "bias", *bias, logits);

  const c10::cuda::CUDAGuard guard(logits.device());
  auto weights = at::empty({T, top_k}, logits.options().dtype(at::kFloat));
  auto ids = at::empty({T, top_k}, logits.options().dtype(at::kInt));
  k2k::TopkRouterParams p;
  p.logits = logits.data_ptr();
  p.logits_bf16 = dt == at::kBFloat16;
  p.bias = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  p.weights = weights.data_ptr<float>();
  p.ids = ids.data_ptr<int32_t>();
  p.T = T;
  p.E = static_cast<int>(E);
  p.top_k = static_cast<int>(top_k);
  p.n_group = static_cast<int>(n_group);
  p.topk_group = static_cast<int>(topk_group);
  p.softmax = scoring == "softmax";
  p.renormalize = renormalize;
  p.scale = static_cast<float>(routed_scaling_factor);
  // K2K_ROUTER_KERNEL = warp | block forces a kernel (tuning and tests; read per call, so at capture time)
  if (const char* v = std::getenv("K2K_ROUTER_KERNEL")) {
    const std::string kernel(v);
    TORCH_CHECK_VALUE(kernel == "warp" || kernel == "block",
                      "k2kernels.topk_router: K2K_ROUTER_KERNEL must be warp or block (or unset); got '", kernel, "'");
    p.kernel = kernel == "warp" ? k2k::kRouterWarp : k2k::kRouterBlock;
  }
  k2k::launch_topk_router(p, logits.get_device(), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {weights, ids};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> moe_align_cuda(const at::Tensor& ids, int64_t num_experts,
                                                                          int64_t block_size,
                                                                          const std::optional<at::Tensor>& expert_map) {
  const auto dt = ids.scalar_type();
  TORCH_CHECK_VALUE((dt == at::kInt || dt == at::kLong) && ids.dim() == 2,
                    "k2kernels.moe_align: ids must be int32/int64 [T, k]; got ", k2k::describe(ids));
  TORCH_CHECK_VALUE(ids.is_contiguous(), "k2kernels.moe_align: ids must be contiguous; got strides ", ids.strides(),
                    " for shape ", ids.sizes());
  TORCH_CHECK_VALUE(num_experts >= 1 && num_experts <= k2k::kMoeAlignMaxExperts,
                    "k2kernels.moe_align: num_experts must be in [1, ", k2k::kMoeAlignMaxExperts, "]; got ", num_experts);
  TORCH_CHECK_VALUE(block_size >= 1, "k2kernels.moe_align: block_size must be >= 1; got ", block_size);
  const int64_t n = ids.numel();
  TORCH_CHECK_VALUE(n + num_experts * (block_size - 1) < (int64_t(1) << 31),
                    "k2kernels.moe_align: T*k + num_experts*(block_size-1) must be < 2^31 (int32 positions); got T*k=", n,
                    ", num_experts=", num_experts, ", block_size=", block_size);
  if (expert_map.has_value()) {
    k2k::check_tensor(kAlign, "expert_map", *expert_map, at::kInt, 1,
                      "int32 [E_global] (global -> local expert, -1 = not on this rank)");
    k2k::check_on_device(kAlign, "expert_map", *expert_map, ids);
  }

  const c10::cuda::CUDAGuard guard(ids.device());
  const auto i32 = ids.options().dtype(at::kInt);
  auto offsets = at::empty({num_experts + 1}, i32);
  auto sorted = at::empty({n}, i32);
  auto inverse = at::empty({n}, i32);
  auto padded = at::empty({num_experts + 1}, i32);
  const int64_t ws_ints = k2k::moe_align_workspace_ints(n, static_cast<int>(num_experts));
  at::Tensor ws = ws_ints > 0 ? at::empty({ws_ints}, i32) : at::Tensor();
  k2k::MoeAlignParams p;
  p.ids = ids.data_ptr();
  p.ids64 = dt == at::kLong;
  p.n_pairs = n;
  p.n_global = expert_map.has_value() ? expert_map->size(0) : num_experts;
  p.expert_map = expert_map.has_value() ? expert_map->data_ptr<int32_t>() : nullptr;
  p.E = static_cast<int>(num_experts);
  p.block_size = static_cast<int>(block_size);
  p.offsets = offsets.data_ptr<int32_t>();
  p.sorted_pairs = sorted.data_ptr<int32_t>();
  p.inverse = inverse.data_ptr<int32_t>();
  p.padded_offsets = padded.data_ptr<int32_t>();
  p.workspace = ws_ints > 0 ? ws.data_ptr<int32_t>() : nullptr;
  k2k::launch_moe_align(p, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {offsets, sorted, inverse, padded};
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) {
  m.impl("topk_router", &topk_router_cuda);
  m.impl("moe_align", &moe_align_cuda);
}
