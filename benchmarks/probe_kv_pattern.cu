// Does the paged NHD layout's access pattern cap decode attention's bandwidth? (issue 6) No torch.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a benchmarks/probe_kv_pattern.cu -o /tmp/probe_kv
//   /tmp/probe_kv
//
// Why: the rows8 decode kernel read 69 % of the 4.2 TB/s copy rate at B=32, 8K keys, 8 KV heads, D 128.
// Each of its CTAs reads ONE KV head of one sequence: in the NHD cache [page][16 keys][8 heads][128 B]
// that is 128-byte rows 1 KB apart. Here the same bytes (K and V caches of 32 x 8192 keys x 8 heads x
// 128 B, 512 MiB) are read without math, after a 256 MB read that evicts L2:
//   per_head/S: CTA (b, h, s), 4 warps; warp w reads 16-key chunks w, w + 4, ... of split s of sequence b,
//               head h, one 16-byte piece per lane per instruction (4 keys x 128 B per instruction; the
//               kernel's K loads are 8 keys x 64 B), like the kernel: one head's rows, ~8 KB per warp in flight;
//   all_heads : CTA (b, j), 4 warps; warp w reads chunks j + 8 (w + 4 i) of sequence b, all 8 heads
//               (each chunk 16 KB contiguous per cache) -- the same bytes per CTA, contiguous;
//   flat      : grid-stride contiguous read of both caches (the copy-like ceiling).
// Measured (H200, sixth session of 2026-11-29, benchmarks/RESULTS.md): per_head/1 75 %, per_head/2,4,8
// 100-104 %, all_heads 69 %, flat 105 % of 4.2 TB/s. The pattern is not the cause: 256 CTAs of 4 warps
// (~8 warps per SM, ~8 KB in flight each) cannot cover HBM's latency; twice the warps can. That is why
// the rows8 kernel's CTAs now have 6 warps (csrc/attention/fp8_attention_rows8.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe_common.cuh"

namespace {

constexpr int kB = 32, kKeys = 8192, kHeads = 8, kRow = 128, kPage = 16;
constexpr int64_t kSeqBytes = int64_t(kKeys) * kHeads * kRow;          // one sequence's pages, contiguous
constexpr int64_t kCacheBytes = kB * kSeqBytes;                        // 256 MiB per cache
constexpr int kChunks = kKeys / kPage;                                 // 512 chunks of 16 keys per sequence
constexpr int kChunkBytes = kPage * kHeads * kRow;                     // 16 KB: one page, all heads

__device__ __forceinline__ uint4 ld_stream16(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ void fold(uint32_t& acc, uint4 v) { acc ^= v.x ^ v.y ^ v.z ^ v.w; }

// One 16-key chunk of one head: lane l reads key 4 i + l / 8, bytes (l % 8) * 16 of the 128-byte row.
template <int kSplits>
__global__ void __launch_bounds__(128) per_head(const uint8_t* k, const uint8_t* v, uint32_t* sink) {
  const int s = blockIdx.x % kSplits, bh = blockIdx.x / kSplits;
  const int b = bh / kHeads, h = bh % kHeads, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t lane_off = int64_t(lane / 8) * kHeads * kRow + h * kRow + (lane % 8) * 16;
  uint32_t acc = 0;
  constexpr int kPer = kChunks / kSplits;
  for (int c = s * kPer + warp; c < (s + 1) * kPer; c += 8) {            // two chunks per iteration: 16 loads in flight
    uint4 x[16];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int64_t base = b * kSeqBytes + int64_t(c + 4 * u) * kChunkBytes + lane_off;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        x[8 * u + i] = ld_stream16(k + base + int64_t(4 * i) * kHeads * kRow);
        x[8 * u + 4 + i] = ld_stream16(v + base + int64_t(4 * i) * kHeads * kRow);
      }
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) fold(acc, x[i]);
  }
  if (acc == 0x12345678u) *sink = acc;
}

// The same bytes per CTA, contiguous: chunk j + 8 (w + 4 i) of sequence b, all heads (16 KB per cache).
__global__ void __launch_bounds__(128) all_heads(const uint8_t* k, const uint8_t* v, uint32_t* sink) {
  const int b = blockIdx.x / kHeads, j = blockIdx.x % kHeads, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint32_t acc = 0;
  for (int c = j + 8 * warp; c < kChunks; c += 32) {
    const int64_t base = b * kSeqBytes + int64_t(c) * kChunkBytes + lane * 16;
    for (int p0 = 0; p0 < kChunkBytes / 512; p0 += 8) {   // 512 B per warp instruction; 16 loads in flight
      uint4 x[16];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        x[u] = ld_stream16(k + base + (p0 + u) * 512);
        x[8 + u] = ld_stream16(v + base + (p0 + u) * 512);
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) fold(acc, x[i]);
    }
  }
  if (acc == 0x12345678u) *sink = acc;
}

__global__ void __launch_bounds__(256) flat(const uint8_t* k, const uint8_t* v, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x * 16;
  for (int64_t o = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 16; o < kCacheBytes; o += 4 * stride) {
    uint4 x[8];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t a = o + u * stride < kCacheBytes ? o + u * stride : o;
      x[u] = ld_stream16(k + a);
      x[4 + u] = ld_stream16(v + a);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) fold(acc, x[i]);
  }
  if (acc == 0x12345678u) *sink = acc;
}

void report(const char* name, float t) {
  const double tbs = 2.0 * kCacheBytes / (t * 1e-6) / 1e12;
  std::printf("%-10s %8.1f us  %5.2f TB/s  %5.1f %% of 4.2\n", name, t, tbs, 100.0 * tbs / 4.2);
}

}  // namespace

int main() {
  uint8_t *k, *v;
  uint32_t* sink;
  CHECK(cudaMalloc(&k, kCacheBytes));
  CHECK(cudaMalloc(&v, kCacheBytes));
  CHECK(cudaMemset(k, 0x11, kCacheBytes));
  CHECK(cudaMemset(v, 0x22, kCacheBytes));
  CHECK(cudaMalloc(&sink, 4));
  const L2Flush flush;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::printf("K + V caches: %d sequences x %d keys x %d heads x %d B = %.0f MiB each\n", kB, kKeys, kHeads, kRow,
              kCacheBytes / 1048576.0);
  report("per_head", median_us([&] { per_head<1><<<kB * kHeads, 128>>>(k, v, sink); }, &flush));
  report("per_head/2", median_us([&] { per_head<2><<<kB * kHeads * 2, 128>>>(k, v, sink); }, &flush));
  report("per_head/4", median_us([&] { per_head<4><<<kB * kHeads * 4, 128>>>(k, v, sink); }, &flush));
  report("per_head/8", median_us([&] { per_head<8><<<kB * kHeads * 8, 128>>>(k, v, sink); }, &flush));
  report("all_heads", median_us([&] { all_heads<<<kB * kHeads, 128>>>(k, v, sink); }, &flush));
  report("flat", median_us([&] { flat<<<sms * 8, 256>>>(k, v, sink); }, &flush));
  return 0;
}
