// Which way of streaming weights into shared memory keeps HBM busy on this GPU, with and without the
// decode GEMM's math next to it? A standalone experiment (no torch) behind the moe_gemm decode design.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc benchmarks/probe_stream.cu -o /tmp/probe
//   /tmp/probe            # prints one line per (mechanism, stage size, stages, math)
//
// The decode kernel (csrc/moe_gemm/moe_gemm_persist.cuh) reaches ~56 % of the 4.2 TB/s copy rate at
// T = 1, with Nsight Compute showing DRAM at 48 % and issue slots at 57 %. Two explanations predict
// different things here:
//   (a) the copies themselves (per-thread 16-byte cp.async, ~4 per thread per stage, plus address math)
//       cap the bytes in flight: then "cpasync, no math" is already far below "ldg" / "bulk";
//   (b) the math (dequantization, ~13 integer/bf16 instructions per 4 weight bytes, + MMA) competes with
//       the copies for issue slots: then "cpasync, math" << "cpasync, no math" and a producer warp with
//       bulk copies ("bulk, math") recovers the gap only if the math alone fits under the DRAM time.
// Every kernel reads the same bytes: a 128 MiB window of a 1 GiB buffer, a different window per launch
// (L2 is 50 MiB, so nothing is re-read from L2), in units of one stage, unit u on CTA u % grid.
#include <cuda/ptx>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "moe_gemm/moe_gemm_mma.cuh"

namespace {

using k2k::moe::cp_async_16;
using k2k::moe::cp_async_commit;
using k2k::moe::cp_async_wait;
using k2k::moe::dequant_word;
using k2k::moe::mma_bf16_16816;

constexpr int kConsumers = 128;                   // 4 consumer warps, as in the decode kernel
constexpr int kActBytes = 4096;                   // one 8-token activation stage (K step 256)

// What the decode kernel does per 16-byte weight chunk of a thread: dequantize 4 words and run 4 MMAs
// (m16n8k16) on them with activations read from shared memory and paired by byte_perm; or, without the
// math, just fold the words into a register so the loads cannot be removed.
template <bool kMath>
__device__ __forceinline__ void consume_chunk(uint4 w, const uint4* act, uint32_t scale2, float (&acc)[2][4],
                                              uint32_t& fold) {
  if constexpr (!kMath) {
    fold ^= w.x ^ w.y ^ w.z ^ w.w;
  } else {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t ra[4], rb[4];
      dequant_word(words[2 * h], scale2, ra);
      dequant_word(words[2 * h + 1], scale2, rb);
      const uint4 x = act[h * 32];
      const uint32_t b0 = __byte_perm(x.x, x.z, 0x5410), b1 = __byte_perm(x.x, x.z, 0x7632);
      const uint32_t b2 = __byte_perm(x.y, x.w, 0x5410), b3 = __byte_perm(x.y, x.w, 0x7632);
      mma_bf16_16816(acc[h], ra[0], rb[0], ra[1], rb[1], b0, b1);
      mma_bf16_16816(acc[h], ra[2], rb[2], ra[3], rb[3], b2, b3);
    }
  }
}

template <int kStageBytes>
__device__ __forceinline__ void consume_stage(const uint8_t* stage, const uint4* act, int tid, float (&acc)[2][4],
                                              uint32_t& fold, bool math) {
  constexpr int kChunks = kStageBytes / 16 / kConsumers;
  const uint4* w = reinterpret_cast<const uint4*>(stage);
  const uint4* a = act + (tid & 31);
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    if (math) consume_chunk<true>(w[tid + j * kConsumers], a + (j & 1) * 64, 0x3F803F80u, acc, fold);
    else consume_chunk<false>(w[tid + j * kConsumers], a, 0, acc, fold);
  }
}

__device__ __forceinline__ void write_sink(float* sink, const float (&acc)[2][4], uint32_t fold) {
  float s = __uint_as_float(fold & 0x007FFFFFu);
#pragma unroll
  for (int h = 0; h < 2; ++h) s += acc[h][0] + acc[h][1] + acc[h][2] + acc[h][3];
  sink[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

// (1) Per-thread 16-byte cp.async into kStages stages, one __syncthreads per stage (the decode kernel's
// scheme).
template <int kStageBytes, int kStages, bool kMath>
__global__ void __launch_bounds__(kConsumers, 1) cpasync_stream(const uint8_t* src, int64_t units, float* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  const uint4* act = reinterpret_cast<const uint4*>(smem + kStages * kStageBytes);
  const int tid = threadIdx.x;
  constexpr int kCopies = kStageBytes / 16 / kConsumers;
  int64_t next = blockIdx.x;
  auto issue = [&](int buf) {
    if (next < units) {
#pragma unroll
      for (int j = 0; j < kCopies; ++j)
        cp_async_16(smem + buf * kStageBytes + (tid + j * kConsumers) * 16,
                    src + next * kStageBytes + (tid + j * kConsumers) * 16, 16);
    }
    cp_async_commit();
    next += gridDim.x;
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);
  float acc[2][4] = {};
  uint32_t fold = 0;
  int buf = 0;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    issue(buf == 0 ? kStages - 1 : buf - 1);
    consume_stage<kStageBytes>(smem + buf * kStageBytes, act, tid, acc, fold, kMath);
    buf = buf + 1 == kStages ? 0 : buf + 1;
  }
  cp_async_wait<0>();
  write_sink(sink, acc, fold);
}

// (2) A producer warp (one elected thread) issues one bulk copy (cp.async.bulk) per stage that completes
// on the stage's "full" mbarrier; the 4 consumer warps wait on it and release the stage on its "empty"
// mbarrier. No copy instructions, no address math and no __syncthreads in the consumer warps.
template <int kStageBytes, int kStages, bool kMath>
__global__ void __launch_bounds__(kConsumers + 32, 1) bulk_stream(const uint8_t* src, int64_t units, float* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const uint4* act = reinterpret_cast<const uint4*>(smem + kStages * kStageBytes);
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      cuda::ptx::mbarrier_init(&full[s], 1);
      cuda::ptx::mbarrier_init(&empty[s], kConsumers / 32);    // one arrival per consumer warp
    }
    cuda::ptx::fence_mbarrier_init(cuda::ptx::sem_release, cuda::ptx::scope_cluster);
  }
  __syncthreads();
  if (tid >= kConsumers) {                         // producer warp
    if (tid == kConsumers) {
      int s = 0;
      uint32_t phase = 0;
      for (int64_t u = blockIdx.x, i = 0; u < units; u += gridDim.x, ++i) {
        if (i >= kStages)
          while (!cuda::ptx::mbarrier_try_wait_parity(&empty[s], phase ^ 1)) {
          }
        cuda::ptx::mbarrier_arrive_expect_tx(cuda::ptx::sem_release, cuda::ptx::scope_cta,
                                             cuda::ptx::space_shared, &full[s], kStageBytes);
        cuda::ptx::cp_async_bulk(cuda::ptx::space_shared, cuda::ptx::space_global, smem + s * kStageBytes,
                                 src + u * kStageBytes, kStageBytes, &full[s]);
        if (++s == kStages) {
          s = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }
  float acc[2][4] = {};
  uint32_t fold = 0;
  int s = 0;
  uint32_t phase = 0;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    while (!cuda::ptx::mbarrier_try_wait_parity(&full[s], phase)) {
    }
    consume_stage<kStageBytes>(smem + s * kStageBytes, act, tid, acc, fold, kMath);
    __syncwarp();
    if ((tid & 31) == 0) cuda::ptx::mbarrier_arrive(&empty[s]);
    if (++s == kStages) {
      s = 0;
      phase ^= 1;
    }
  }
  write_sink(sink, acc, fold);
}

// (3) Reference: plain 16-byte loads into registers, 4 in flight per thread, no shared memory.
__global__ void __launch_bounds__(256) ldg_stream(const uint8_t* src, int64_t bytes, float* sink) {
  const uint4* p = reinterpret_cast<const uint4*>(src);
  const int64_t n = bytes / 16, stride = int64_t(gridDim.x) * blockDim.x;
  uint32_t fold = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = i + j * stride < n ? k2k::moe::ld_stream_u4(p + i + j * stride) : uint4{};
#pragma unroll
    for (int j = 0; j < 4; ++j) fold ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
  }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = __uint_as_float(fold & 0x007FFFFFu);
}

constexpr int64_t kBuffer = int64_t(1) << 30, kWindow = int64_t(128) << 20;
constexpr int kLaunches = 16;

template <typename Launch>
double time_tbs(Launch launch) {
  launch(0);                                       // warm-up (also the first window)
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  for (int i = 0; i < kLaunches; ++i) launch(int64_t(i % (kBuffer / kWindow)) * kWindow);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    std::printf("  CUDA error: %s\n", cudaGetErrorString(err));
    return 0;
  }
  return double(kWindow) * kLaunches / (ms * 1e-3) / 1e12;
}

struct Ctx {
  const uint8_t* buf;
  float* sink;
  int sms;
};

template <int kStageBytes, int kStages, bool kMath, bool kBulk>
void run(const Ctx& c) {
  auto kernel = kBulk ? bulk_stream<kStageBytes, kStages, kMath> : cpasync_stream<kStageBytes, kStages, kMath>;
  const int threads = kBulk ? kConsumers + 32 : kConsumers;
  const int smem = kStages * kStageBytes + kActBytes;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  int per_sm = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem);
  const int grid = c.sms * per_sm;
  const int64_t units = kWindow / kStageBytes;
  const double tbs = time_tbs([&](int64_t off) { kernel<<<grid, threads, smem>>>(c.buf + off, units, c.sink); });
  std::printf("%-8s stage %6d B x %d  math %-3s  CTAs/SM %2d  %.2f TB/s  (%.0f %% of 4.2)\n", kBulk ? "bulk" : "cpasync",
              kStageBytes, kStages, kMath ? "yes" : "no", per_sm, tbs, 100 * tbs / 4.2);
}

}  // namespace

int main() {
  Ctx c{};
  cudaDeviceGetAttribute(&c.sms, cudaDevAttrMultiProcessorCount, 0);
  uint8_t* buf = nullptr;
  cudaMalloc(&buf, kBuffer);
  cudaMemset(buf, 0x5A, kBuffer);                  // non-zero nibbles: the math path sees real work
  cudaMalloc(&c.sink, sizeof(float) * 1024 * 1024);
  c.buf = buf;
  const double ldg = time_tbs([&](int64_t off) { ldg_stream<<<c.sms * 8, 256>>>(c.buf + off, kWindow, c.sink); });
  std::printf("ldg      16-byte loads to registers            %.2f TB/s  (%.0f %% of 4.2)\n", ldg, 100 * ldg / 4.2);
  // the decode kernel's weight stage (64 rows x 128 B) and deeper / larger variants
  run<8192, 4, false, false>(c);
  run<8192, 4, true, false>(c);
  run<8192, 6, false, false>(c);
  run<8192, 6, true, false>(c);
  run<8192, 4, false, true>(c);
  run<8192, 4, true, true>(c);
  run<8192, 8, false, true>(c);
  run<8192, 8, true, true>(c);
  run<16384, 4, false, true>(c);
  run<16384, 4, true, true>(c);
  run<32768, 2, true, true>(c);
  run<32768, 3, true, true>(c);
  cudaFree(buf);
  cudaFree(c.sink);
  return 0;
}
