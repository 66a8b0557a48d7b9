// Framework-free launcher: scatter BF16 K (or V) rows into a paged FP8 E4M3 cache.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace k2k {
// src [T, H, D] bf16 contiguous; cache [num_slots = pages * page_size, H, D] e4m3 contiguous;
// slot_mapping [T] int64 (-1 skips; slots outside [0, num_slots) are skipped too, never written);
// scale: fp32 on the device, one value (scale_per_head = false) or H values. store = satfinite(x / scale).
void launch_kv_cache_append(const __nv_bfloat16* src, uint8_t* cache, const int64_t* slot_mapping,
                            const float* scale, bool scale_per_head, int64_t T, int64_t H, int64_t D,
                            int64_t num_slots, cudaStream_t stream);
}  // namespace k2k
