// Launcher-side input checks: ValueError (TORCH_CHECK_VALUE) naming the op, the tensor and what
// was expected, in the same words as k2kernels/_checks.py.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>

namespace k2k {

inline std::string describe(const at::Tensor& t) {
  std::ostringstream s;
  s << c10::toString(t.scalar_type()) << " " << t.sizes();
  return s.str();
}

inline void check_tensor(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype,
                         int64_t dim, const char* expected) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype && (dim < 0 || t.dim() == dim), "k2kernels.", op, ": ", name,
                    " must be ", expected, "; got ", describe(t));
  TORCH_CHECK_VALUE(t.is_contiguous(), "k2kernels.", op, ": ", name, " must be contiguous; got strides ",
                    t.strides(), " for shape ", t.sizes());
}

inline void check_on_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), "k2kernels.", op, ": all tensors must be on one device; got ",
                    name, " on ", t.device(), " and the first input on ", ref.device());
}

// A scale: float32 [] or [1], or [count] when per-head/per-expert values are allowed (count > 0).
inline void check_scale(const char* op, const char* name, const at::Tensor& t, int64_t count) {
  const bool is_f32 = t.scalar_type() == at::kFloat;
  const bool scalar = t.numel() == 1 && t.dim() <= 1;
  const bool per = count > 0 && t.dim() == 1 && t.numel() == count;
  TORCH_CHECK_VALUE(is_f32 && (scalar || per) && t.is_contiguous(), "k2kernels.", op, ": ", name,
                    " must be float32 [] or [1]", count > 0 ? " or [" + std::to_string(count) + "]" : "",
                    "; got ", describe(t));
}

}  // namespace k2k
