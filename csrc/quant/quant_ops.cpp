// torch bindings of the quant family: checks inputs, allocates, launches on the current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/torch_checks.h"
#include "quant/quantize_nvfp4.h"

namespace {

std::tuple<at::Tensor, at::Tensor> quantize_nvfp4_cuda(const at::Tensor& x, const at::Tensor& global_scale) {
  constexpr const char* op = "quantize_nvfp4";
  k2k::check_tensor(op, "x", x, at::kBFloat16, 2, "bfloat16 [M, K]");
  TORCH_CHECK_VALUE(x.size(1) % 16 == 0, "k2kernels.quantize_nvfp4: x must have K % 16 == 0 (one e4m3 scale per 16 elements); got K=", x.size(1));
  TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0,
                    "k2kernels.quantize_nvfp4: x must be 16-byte aligned (use a fresh tensor, not an offset view)");
  k2k::check_scale(op, "global_scale", global_scale, 0);
  k2k::check_on_device(op, "global_scale", global_scale, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), K = x.size(1);
  auto packed = at::empty({M, K / 2}, x.options().dtype(at::kByte));
  auto scales = at::empty({M, K / 16}, x.options().dtype(at::kFloat8_e4m3fn));
  k2k::launch_quantize_nvfp4(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr()), global_scale.data_ptr<float>(),
                             packed.data_ptr<uint8_t>(), reinterpret_cast<uint8_t*>(scales.data_ptr()), M, K,
                             c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {packed, scales};
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) { m.impl("quantize_nvfp4", &quantize_nvfp4_cuda); }
