// The shared-memory opt-in a launcher may use: the device's limit, capped by $K2K_SMEM_LIMIT.
// The tests set K2K_SMEM_LIMIT=101376 on the H200 so every launch there is one that fits SM120.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>

namespace k2k {

inline int smem_optin_limit(int device) {
  int optin = 0;
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (const char* cap = std::getenv("K2K_SMEM_LIMIT")) {
    const int c = std::atoi(cap);
    if (c > 0 && c < optin) optin = c;
  }
  return optin;
}

}  // namespace k2k
