// torch binding of quantize_nvfp4_experts (quant family): checks inputs, allocates, launches on the
// current stream. Messages mirror k2kernels/reference/quant_experts.py.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/torch_checks.h"
#include "quant/quantize_nvfp4_experts.h"

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_nvfp4_experts_cuda(const at::Tensor& x,
                                                                           const at::Tensor& global_scale,
                                                                           const at::Tensor& expert_offsets,
                                                                           const std::optional<at::Tensor>& row_idx) {
  constexpr const char* op = "quantize_nvfp4_experts";
  k2k::check_tensor(op, "x", x, at::kBFloat16, 2, "bfloat16 [M, K]");
  TORCH_CHECK_VALUE(x.size(1) % 16 == 0, "k2kernels.", op,
                    ": x must have K % 16 == 0 (one e4m3 scale per 16 elements); got K=", x.size(1));
  TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0, "k2kernels.", op,
                    ": x must be 16-byte aligned (use a fresh tensor, not an offset view)");
  k2k::check_tensor(op, "expert_offsets", expert_offsets, at::kInt, 1, "int32 [E+1]");
  TORCH_CHECK_VALUE(expert_offsets.numel() >= 1, "k2kernels.", op, ": expert_offsets must be int32 [E+1]; got ",
                    k2k::describe(expert_offsets));
  const int64_t E = expert_offsets.numel() - 1;
  k2k::check_scale(op, "global_scale", global_scale, E);
  k2k::check_on_device(op, "global_scale", global_scale, x);
  k2k::check_on_device(op, "expert_offsets", expert_offsets, x);
  int64_t M = x.size(0);
  const int32_t* idx = nullptr;
  if (row_idx.has_value()) {
    k2k::check_tensor(op, "row_idx", *row_idx, at::kInt, 1, "int32 [M]");
    k2k::check_on_device(op, "row_idx", *row_idx, x);
    M = row_idx->numel();
    idx = row_idx->data_ptr<int32_t>();
  }
  const int64_t K = x.size(1);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t kb_pad = (K / 16 + 3) / 4 * 4;
  auto packed = at::empty({M, K / 2}, x.options().dtype(at::kByte));
  auto sf = at::empty({k2k::nvfp4_expert_sf_rows(M, E), kb_pad}, x.options().dtype(at::kFloat8_e4m3fn));
  auto sf_offsets = at::empty({E + 1}, x.options().dtype(at::kInt));
  k2k::launch_quantize_nvfp4_experts(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr()), x.size(0), idx,
                                     global_scale.data_ptr<float>(), global_scale.numel() > 1,  // [E] with E > 1: per expert; [] or [1]: shared
                                     expert_offsets.data_ptr<int32_t>(), E, packed.data_ptr<uint8_t>(),
                                     reinterpret_cast<uint8_t*>(sf.data_ptr()), sf_offsets.data_ptr<int32_t>(), M, K,
                                     c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {packed, sf, sf_offsets};
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) { m.impl("quantize_nvfp4_experts", &quantize_nvfp4_experts_cuda); }
