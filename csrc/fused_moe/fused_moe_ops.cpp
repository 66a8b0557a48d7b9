// torch bindings of the fused_moe family: the three stage kernels (moe_gather, moe_silu_mul,
// moe_combine) and fused_moe, the whole MoE layer as one op.
//
// fused_moe's CUDA implementation is a C++ composite: it calls topk_router, moe_align and moe_gemm
// through the dispatcher (so it uses whatever the routing and moe_gemm families registered) and
// launches this family's kernels directly. Every stage is on the current stream, sized by host-known
// shapes only (T, k, H, I, E): no host sync, so a whole layer can be captured in one CUDA graph.
// Messages mirror k2kernels/reference/fused_moe.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>

#include "common/torch_checks.h"
#include "fused_moe/fused_moe.h"

namespace {

constexpr int64_t kAlign = 256;    // reference/fused_moe.py: WORKSPACE_ALIGN
int64_t align_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

const __nv_bfloat16* bf16_ptr(const at::Tensor& t) { return reinterpret_cast<const __nv_bfloat16*>(t.data_ptr()); }
__nv_bfloat16* bf16_mut(const at::Tensor& t) { return reinterpret_cast<__nv_bfloat16*>(t.data_ptr()); }

// ---- moe_gather ----------------------------------------------------------------------------------

void check_gather(const at::Tensor& x, const at::Tensor& pairs, int64_t top_k) {
  k2k::check_tensor("moe_gather", "x", x, at::kBFloat16, 2, "bfloat16 [T, H]");
  k2k::check_tensor("moe_gather", "sorted_pairs", pairs, at::kInt, 1, "int32 [T*k]");
  TORCH_CHECK_VALUE(top_k >= 1, "k2kernels.moe_gather: top_k must be >= 1; got ", top_k);
  k2k::check_on_device("moe_gather", "sorted_pairs", pairs, x);
}

void gather_into(const at::Tensor& x, const at::Tensor& pairs, int64_t top_k, const at::Tensor& out) {
  k2k::launch_moe_gather(bf16_ptr(x), pairs.data_ptr<int32_t>(), bf16_mut(out), x.size(0), x.size(1), pairs.size(0),
                         static_cast<int>(top_k), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor moe_gather_cuda(const at::Tensor& x, const at::Tensor& pairs, int64_t top_k) {
  check_gather(x, pairs, top_k);
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({pairs.size(0), x.size(1)}, x.options());
  gather_into(x, pairs, top_k, out);
  return out;
}

// ---- moe_silu_mul --------------------------------------------------------------------------------

void silu_mul_into(const at::Tensor& gu, const at::Tensor& out) {
  k2k::launch_moe_silu_mul(bf16_ptr(gu), bf16_mut(out), gu.size(0), gu.size(1) / 2, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor moe_silu_mul_cuda(const at::Tensor& gu) {
  k2k::check_tensor("moe_silu_mul", "gate_up", gu, at::kBFloat16, 2, "bfloat16 [M, 2I]");
  TORCH_CHECK_VALUE(gu.size(1) % 2 == 0, "k2kernels.moe_silu_mul: gate_up must be bfloat16 [M, 2I] (even width: [gate | up]); got ",
                    gu.sizes());
  const c10::cuda::CUDAGuard guard(gu.device());
  auto out = at::empty({gu.size(0), gu.size(1) / 2}, gu.options());
  silu_mul_into(gu, out);
  return out;
}

// ---- moe_combine ---------------------------------------------------------------------------------

void check_combine(const at::Tensor& y, const at::Tensor& inverse, const at::Tensor& w, const std::optional<at::Tensor>& shared) {
  constexpr const char* op = "moe_combine";
  k2k::check_tensor(op, "y", y, at::kBFloat16, 2, "bfloat16 [M, H]");
  k2k::check_tensor(op, "topk_weights", w, at::kFloat, 2, "float32 [T, k]");
  const int64_t T = w.size(0), k = w.size(1);
  const std::string want_inv = "int32 [" + std::to_string(T * k) + "]";
  k2k::check_tensor(op, "inverse", inverse, at::kInt, 1, want_inv.c_str());
  TORCH_CHECK_VALUE(inverse.size(0) == T * k, "k2kernels.moe_combine: inverse must be int32 [", T * k,
                    "] (T*k for topk_weights ", w.sizes(), "); got ", inverse.sizes());
  if (shared.has_value()) {
    const std::string want = "bfloat16 [" + std::to_string(T) + ", " + std::to_string(y.size(1)) + "]";
    k2k::check_tensor(op, "shared", *shared, at::kBFloat16, 2, want.c_str());
    TORCH_CHECK_VALUE(shared->size(0) == T && shared->size(1) == y.size(1), "k2kernels.moe_combine: shared must be ", want,
                      "; got ", shared->sizes());
    k2k::check_on_device(op, "shared", *shared, y);
  }
  k2k::check_on_device(op, "inverse", inverse, y);
  k2k::check_on_device(op, "topk_weights", w, y);
  TORCH_CHECK_VALUE(k <= (int64_t(1) << 20), "k2kernels.moe_combine: k must be < 2^20; got ", k);
}

void combine_into(const at::Tensor& y, const at::Tensor& inverse, const at::Tensor& w, const std::optional<at::Tensor>& shared,
                  const at::Tensor& out) {
  k2k::launch_moe_combine(bf16_ptr(y), inverse.data_ptr<int32_t>(), w.data_ptr<float>(),
                          shared.has_value() ? bf16_ptr(*shared) : nullptr, bf16_mut(out), w.size(0),
                          static_cast<int>(w.size(1)), y.size(1), y.size(0), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor moe_combine_cuda(const at::Tensor& y, const at::Tensor& inverse, const at::Tensor& w,
                            const std::optional<at::Tensor>& shared) {
  check_combine(y, inverse, w, shared);
  const c10::cuda::CUDAGuard guard(y.device());
  auto out = at::empty({w.size(0), y.size(1)}, y.options());
  combine_into(y, inverse, w, shared, out);
  return out;
}

// ---- fused_moe -----------------------------------------------------------------------------------

using RouterFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&, int64_t,
                                                    c10::string_view, int64_t, int64_t, bool, double);
using AlignFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, int64_t, int64_t,
                                                                           const std::optional<at::Tensor>&);
using GemmFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          c10::string_view, const std::optional<at::Tensor>&, c10::string_view);

template <typename Fn>
c10::TypedOperatorHandle<Fn> op_handle(const char* name) {
  // Looked up on first use: the schemas are defined by the Python package before any family loads.
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

at::Tensor fused_moe_cuda(const at::Tensor& x, const at::Tensor& logits, const std::optional<at::Tensor>& e_bias,
                          const at::Tensor& w13, const at::Tensor& w13_scale, const at::Tensor& w13_alpha,
                          const at::Tensor& w2, const at::Tensor& w2_scale, const at::Tensor& w2_alpha, int64_t top_k,
                          c10::string_view scoring, int64_t n_group, int64_t topk_group, bool renormalize,
                          double routed_scaling_factor, const std::optional<at::Tensor>& expert_map,
                          const std::optional<at::Tensor>& shared_out, c10::string_view act,
                          const std::optional<at::Tensor>& a13_scale, const std::optional<at::Tensor>& a2_scale,
                          c10::string_view scale_layout, const std::optional<at::Tensor>& workspace) {
  constexpr const char* op = "fused_moe";
  k2k::check_tensor(op, "x", x, at::kBFloat16, 2, "bfloat16 [T, H]");
  const int64_t T = x.size(0), H = x.size(1);
  const auto ldt = logits.scalar_type();
  TORCH_CHECK_VALUE((ldt == at::kFloat || ldt == at::kBFloat16) && logits.dim() == 2 && logits.size(0) == T,
                    "k2kernels.fused_moe: router_logits must be float32/bfloat16 [", T, ", E_global]; got ", k2k::describe(logits));
  const int64_t E_global = logits.size(1);
  k2k::check_tensor(op, "w13", w13, at::kByte, 3, "uint8 [E, 2I, H/2] (packed e2m1)");
  k2k::check_tensor(op, "w2", w2, at::kByte, 3, "uint8 [E, H, I/2] (packed e2m1)");
  const int64_t E = w13.size(0), I = w13.size(1) / 2;
  TORCH_CHECK_VALUE(H % 16 == 0 && w13.size(2) * 2 == H && w13.size(1) % 2 == 0,
                    "k2kernels.fused_moe: w13 must be uint8 [E, 2I, H/2] with H = x.shape[1] = ", H,
                    " (a multiple of 16); got ", w13.sizes());
  TORCH_CHECK_VALUE(w2.size(0) == E && w2.size(1) == H && w2.size(2) == I / 2 && I % 16 == 0, "k2kernels.fused_moe: w2 must be uint8 [",
                    E, ", ", H, ", ", I / 2, "] (I = ", I, " from w13 ", w13.sizes(), ", a multiple of 16); got ", w2.sizes());
  TORCH_CHECK_VALUE(top_k >= 1 && top_k <= E_global, "k2kernels.fused_moe: top_k must be in [1, E_global = ", E_global,
                    "]; got ", top_k);
  if (expert_map.has_value()) {
    const std::string want = "int32 [" + std::to_string(E_global) + "] (global -> local expert, -1 = not on this rank)";
    k2k::check_tensor(op, "expert_map", *expert_map, at::kInt, 1, want.c_str());
    TORCH_CHECK_VALUE(expert_map->size(0) == E_global, "k2kernels.fused_moe: expert_map must be int32 [", E_global,
                      "] (one entry per column of router_logits); got ", expert_map->sizes());
  } else {
    TORCH_CHECK_VALUE(E == E_global, "k2kernels.fused_moe: without expert_map, w13 must hold all E_global = ", E_global,
                      " experts of router_logits; got E = ", E, " (pass expert_map for expert parallelism)");
  }
  if (shared_out.has_value()) {
    const std::string want = "bfloat16 [" + std::to_string(T) + ", " + std::to_string(H) + "]";
    k2k::check_tensor(op, "shared_out", *shared_out, at::kBFloat16, 2, want.c_str());
    TORCH_CHECK_VALUE(shared_out->size(0) == T && shared_out->size(1) == H, "k2kernels.fused_moe: shared_out must be ", want,
                      "; got ", shared_out->sizes());
    k2k::check_on_device(op, "shared_out", *shared_out, x);
  }
  TORCH_CHECK_VALUE(act == "bf16" || act == "nvfp4", "k2kernels.fused_moe: act must be one of ('bf16', 'nvfp4'); got '",
                    std::string(act), "'");
  if (act == "bf16") {
    TORCH_CHECK_VALUE(!a13_scale.has_value() && !a2_scale.has_value(),
                      "k2kernels.fused_moe: a13_scale/a2_scale are only used with act='nvfp4'; pass None for act='bf16'");
  }
  const int64_t M = T * top_k;
  const int64_t a_bytes = align_up(M * H * 2), act_bytes = align_up(M * I * 2);
  if (workspace.has_value()) {
    k2k::check_tensor(op, "workspace", *workspace, at::kByte, 1, "uint8 [bytes]");
    TORCH_CHECK_VALUE(workspace->numel() >= a_bytes + act_bytes, "k2kernels.fused_moe: workspace must hold >= ",
                      a_bytes + act_bytes, " bytes for T = ", T,
                      " tokens (k2kernels.fused_moe.workspace_bytes(max_tokens, H, I, top_k)); got ", workspace->numel());
    k2k::check_on_device(op, "workspace", *workspace, x);
  }
  k2k::check_on_device(op, "router_logits", logits, x);
  k2k::check_on_device(op, "w13", w13, x);
  k2k::check_on_device(op, "w2", w2, x);
  const c10::cuda::CUDAGuard guard(x.device());
  // The stage ops check the rest (scales, alphas, bias, a*_scale) with their own messages.

  static const auto router = op_handle<RouterFn>("k2kernels::topk_router");
  static const auto align = op_handle<AlignFn>("k2kernels::moe_align");
  static const auto gemm = op_handle<GemmFn>("k2kernels::moe_gemm");

  auto [topk_w, ids] = router.call(logits, e_bias, top_k, scoring, n_group, topk_group, renormalize, routed_scaling_factor);
  auto [offsets, pairs, inverse, padded] = align.call(ids, E, 1, expert_map);
  (void)padded;

  // Gathered rows and activations: views into the caller's workspace, else fresh (caching allocator).
  at::Tensor a, h_act;
  if (workspace.has_value()) {
    auto bytes = workspace->narrow(0, 0, a_bytes + act_bytes);
    a = bytes.narrow(0, 0, M * H * 2).view(at::kBFloat16).view({M, H});
    h_act = bytes.narrow(0, a_bytes, M * I * 2).view(at::kBFloat16).view({M, I});
  } else {
    a = at::empty({M, H}, x.options());
    h_act = at::empty({M, I}, x.options());
  }
  if (T == 1 && M > 1) {
    // One token: every routed row is that token's, so gate_up reads x's one row for all M rows (moe_gemm
    // takes a row-stride-0 `a`; its bulk kernel reads it in place, other paths materialize it): no
    // gather launch. Rows outside every expert segment are written as zeros by moe_gemm whatever `a` holds.
    a = x.expand({M, H});
  } else {
    gather_into(x, pairs, top_k, a);
  }
  const auto a13 = act == "nvfp4" ? a13_scale : std::optional<at::Tensor>();
  const auto a2 = act == "nvfp4" ? a2_scale : std::optional<at::Tensor>();
  at::Tensor h = gemm.call(a, w13, w13_scale, w13_alpha, offsets, act, a13, scale_layout);
  silu_mul_into(h, h_act);
  at::Tensor y = gemm.call(h_act, w2, w2_scale, w2_alpha, offsets, act, a2, scale_layout);
  auto out = at::empty({T, H}, x.options());
  combine_into(y, inverse, topk_w, shared_out, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(k2kernels, CUDA, m) {
  m.impl("moe_gather", &moe_gather_cuda);
  m.impl("moe_silu_mul", &moe_silu_mul_cuda);
  m.impl("moe_combine", &moe_combine_cuda);
  m.impl("fused_moe", &fused_moe_cuda);
}
