// Shared by the standalone probes (benchmarks/probe_*.cu): error check, the L2-evicting read and the
// median of timed launches.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

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

// A 256 MB buffer (larger than any L2 here) read before each timed launch; 8 CTAs per SM.
struct L2Flush {
  float4* buf = nullptr;
  int64_t n = (256 << 20) / 16;
  float* sink = nullptr;
  int grid = 0;
  L2Flush() {
    CHECK(cudaMalloc(&buf, n * 16));
    CHECK(cudaMemset(buf, 0, n * 16));
    CHECK(cudaMalloc(&sink, 4));
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    grid = sms * 8;
  }
  void operator()() const { read_all<<<grid, 512>>>(buf, n, sink); }
};

// Median microseconds of launch() between CUDA events on the default stream, over `iters` timed runs
// after `warmup` untimed ones; flush (if given) runs before each.
template <typename Launch>
float median_us(Launch launch, const L2Flush* flush, int iters = 10, int warmup = 2) {
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<float> us;
  for (int it = 0; it < warmup + iters; ++it) {
    if (flush != nullptr) (*flush)();
    CHECK(cudaEventRecord(e0));
    launch();
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (it >= warmup) us.push_back(ms * 1e3f);
  }
  CHECK(cudaEventDestroy(e0));
  CHECK(cudaEventDestroy(e1));
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}
