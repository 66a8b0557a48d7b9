// Host-side facts about the current CUDA device that launchers branch on.
#pragma once
#include <cuda_runtime.h>

namespace k2k {

// Compute-capability major of the current device: an attribute read per call (no sync), safe from any
// host thread and for any device id.
inline int current_device_cc_major() {
  int dev = 0, major = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  return major;
}

}  // namespace k2k
