// Shared by the standalone probes (benchmarks/probe_*.cu): error check and the L2-evicting read.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CHECK(x)                                                                     \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

// Reads n float4 (launch it on a buffer larger than L2): afterwards L2 holds none of the probe's data,
// and no dirty lines (a write would leave some, slowing the next read).
__global__ void read_all(const float4* p, int64_t n, float* sink) {
  float acc = 0.f;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += p[i].x;
  if (acc == 12345.f) *sink = acc;              // never true: keeps the loads
}
