// torch bindings of the attention family (kv_cache_append; fp8_kv_attention joins here).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "attention/kv_cache_append.h"
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

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) { m.impl("kv_cache_append", &kv_cache_append_cuda); }
