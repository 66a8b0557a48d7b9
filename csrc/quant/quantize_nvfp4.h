// Framework-free launcher of the activation NVFP4 quantization kernel.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {
// x [M, K] bf16 row-major (K % 16 == 0, 16-byte aligned) -> packed e2m1 [M, K/2], e4m3 scales [M, K/16].
// global_scale: one fp32 on the device (x ~ q * scale * global_scale).
void launch_quantize_nvfp4(const __nv_bfloat16* x, const float* global_scale, uint8_t* packed,
                           uint8_t* scales, int64_t M, int64_t K, cudaStream_t stream);
}  // namespace k2k
