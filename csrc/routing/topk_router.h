// Framework-free launcher of the fused top-k router (softmax/sigmoid scoring, selection bias,
// grouped top-k, renormalize, scaling) — one kernel launch per call.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {

// Which kernel serves a call: by shape (kRouterAuto), or forced by K2K_ROUTER_KERNEL=warp|block.
enum TopkRouterKernel : int { kRouterAuto = 0, kRouterWarp = 1, kRouterBlock = 2 };

struct TopkRouterParams {
  const void* logits = nullptr;    // [T, E] fp32 or bf16, contiguous
  bool logits_bf16 = false;
  const float* bias = nullptr;     // [E] fp32 selection bias, or nullptr
  float* weights = nullptr;        // [T, top_k] fp32 out (every element written)
  int32_t* ids = nullptr;          // [T, top_k] int32 out (every element written, always in [0, E))
  int64_t T = 0;
  int E = 0;                       // 1..1024
  int top_k = 0;                   // 1..16, <= experts in the kept groups
  int n_group = 1;                 // divides E
  int topk_group = 1;              // 1..n_group
  bool softmax = false;            // false: sigmoid
  bool renormalize = true;
  float scale = 1.f;               // routed_scaling_factor
  TopkRouterKernel kernel = kRouterAuto;
};

// The block-per-token latency kernel (topk_router_block.cu) serves 1 <= T <= kBlockPathMaxT tokens with
// n_group == 1 unless p.kernel says otherwise; the warp-per-token kernel everything else.
constexpr int64_t kBlockPathMaxT = 256;

// Dynamic shared memory the launch needs (the warp kernel: 16 B per expert, more with n_group > 1), so the caller can check it
// against the device's opt-in limit before launching.
int topk_router_smem_bytes(const TopkRouterParams& p);

// T == 0 launches nothing. `device` is the logits' CUDA device (sizes the grid).
void launch_topk_router(const TopkRouterParams& p, int device, cudaStream_t stream);

// The block-per-token kernel alone: returns false (launching nothing) for n_group > 1, or T outside
// [1, kBlockPathMaxT] unless p.kernel == kRouterBlock forces it.
bool launch_topk_router_block(const TopkRouterParams& p, cudaStream_t stream);

}  // namespace k2k
