// Where a decode call of the bulk-copy kernel spends its time: per-CTA phase stamps. No torch.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icsrc -DK2K_BULK_TRACE \
//        benchmarks/probe_bulk.cu -o /tmp/probe_bulk && /tmp/probe_bulk
//
// benchmarks/probe_decode.py found moe_gemm's decode time to be ~9-11 us per call plus ~4 us per
// active expert (gate_up; the per-expert part is ~4.0 TB/s). This splits the fixed part: for n experts of
// one row each (Kimi shapes, tiled layout, constant bytes: timing only), the kernel of
// moe_gemm_bulk.cuh runs after a 256 MB read that evicts L2 (PROBE_NO_FLUSH=1: no read), and every CTA
// stamps its phases (moe_gemm_bulk.cuh, K2K_BULK_TRACE): entry, barriers initialised, experts marked,
// rows without expert zeroed, work list ready, first copies issued, first stage landed, done. Printed:
// CUDA-event time (median of 10 launches); from the last launch's stamps: the span from the first
// CTA's entry to the last CTA's end (globaltimer); per phase the median (and for the later ones / the
// max) over CTAs of the time since the CTA's own entry; at n = 8 every SM's CTAs' end times.
// Results: benchmarks/RESULTS.md, "Fifth session".
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <vector>

#include "moe_gemm/moe_gemm_bulk.cuh"
#include "probe_common.cuh"

namespace {

struct Shape {
  const char* name;
  int N, K;
};

template <int kTokens, int kStages>
void run(const Shape& sh, int n, const uint8_t* w, const uint8_t* ws, const float* alpha, const __nv_bfloat16* a,
         __nv_bfloat16* out, int32_t* offsets, const L2Flush* flush, bool verbose) {
  constexpr int E = 384;
  std::vector<int32_t> h(E + 1, 0);
  for (int e = 0; e < E; ++e) h[e + 1] = h[e] + (e % (E / n) == 0 && e / (E / n) < n ? 1 : 0);
  CHECK(cudaMemcpy(offsets, h.data(), sizeof(int32_t) * (E + 1), cudaMemcpyHostToDevice));
  k2k::MoeGemmParams p{};
  p.a = a;
  p.w = w;
  p.w_scale = ws;
  p.w_alpha = alpha;
  p.expert_offsets = offsets;
  p.out = out;
  p.M = h[E];
  p.N = sh.N;
  p.K = sh.K;
  p.lda = sh.K;
  p.E = E;
  p.scale_layout = k2k::kTiled;
  bool fits = true;
  const float event_us = median_us([&] {
    fits = fits && k2k::moe::launch_bulk<kTokens, kStages>(p, 101376 - k2k::moe::kBulkStaticSmemReserve, 0);
  }, flush);   // flush == nullptr (PROBE_NO_FLUSH): code and offsets stay in L2
  if (!fits) {
    std::printf("config t%d s%d does not fit\n", kTokens, kStages);
    return;
  }
  static long long trace[4096][16];
  CHECK(cudaMemcpyFromSymbol(trace, k2k_bulk_trace, sizeof(trace)));
  // the launcher's own grid (the trace rows of CTAs that ran)
  constexpr auto kernel = k2k::moe::moe_gemm_bulk_kernel<kTokens, kStages>;
  const int units = int(k2k::moe::persistent_units(p));
  const int grid = k2k::moe::persistent_grid<kernel>(units, k2k::moe::kBulkThreads,
                                                     k2k::moe::BulkCfg<kTokens, kStages>::kSmemBytes);
  int occ = 0, sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, k2k::moe::kBulkThreads,
                                                      k2k::moe::BulkCfg<kTokens, kStages>::kSmemBytes));
  long long g0 = trace[0][6], g1 = trace[0][7];
  double cycles = 0, ns = 0;
  std::vector<double> ph[11];
  std::vector<double> entry;
  for (int b = 0; b < grid; ++b) {
    g0 = std::min(g0, trace[b][6]);
    g1 = std::max(g1, trace[b][7]);
    cycles += double(trace[b][4] - trace[b][0]);
    ns += double(trace[b][7] - trace[b][6]);
  }
  const double ghz = cycles / ns;                 // all CTAs' cycles over their nanoseconds
  for (int b = 0; b < grid; ++b) {
    entry.push_back((trace[b][6] - g0) * 1e-3);
    for (int s : {1, 2, 3, 4, 8, 9, 10}) ph[s].push_back((trace[b][s] - trace[b][0]) / ghz * 1e-3);
  }
  auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
  auto mx = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  std::printf("%-8s t%d s%d n=%2d units=%4d grid=%3d (%d/SM)  event %6.1f us  span %6.1f us  entry skew med %4.1f max %4.1f"
              "  | init %4.2f marked %4.2f zeroed %4.2f list %4.2f/%4.2f  issued %4.2f/%4.2f  landed %4.2f/%4.2f  done %5.1f/%5.1f us (%.2f GHz)\n",
              sh.name, kTokens, kStages, n, units, grid, occ, event_us, (g1 - g0) * 1e-3, med(entry), mx(entry),
              med(ph[8]), med(ph[9]), med(ph[10]), med(ph[1]), mx(ph[1]), med(ph[2]), mx(ph[2]), med(ph[3]), mx(ph[3]), med(ph[4]), mx(ph[4]), ghz);
  if (!verbose) return;
  // Per SM (by %smid): its CTAs' end times (us after the first CTA's entry), slowest first within the SM.
  std::vector<std::vector<double>> per_sm(sms);
  for (int b = 0; b < grid; ++b) per_sm[trace[b][5] % sms].push_back((trace[b][7] - g0) * 1e-3);
  std::printf("  end per SM [smid: CTAs' ends]:");
  for (int sm = 0; sm < sms; ++sm) {
    auto& v = per_sm[sm];
    std::sort(v.rbegin(), v.rend());
    std::printf("%s%d:", sm % 8 == 0 ? "\n   " : "  ", sm);
    for (double t : v) std::printf(" %.0f", t);
  }
  std::printf("\n");
}

}  // namespace

int main() {
  const Shape shapes[2] = {{"gate_up", 4096, 7168}, {"down", 7168, 2048}};
  const L2Flush l2_flush;
  const L2Flush* flush = std::getenv("PROBE_NO_FLUSH") ? nullptr : &l2_flush;
  int32_t* offsets;
  CHECK(cudaMalloc(&offsets, 4 * 385));
  float* alpha;
  CHECK(cudaMalloc(&alpha, 4 * 384));
  CHECK(cudaMemset(alpha, 0, 4 * 384));
  __nv_bfloat16 *a, *out;
  CHECK(cudaMalloc(&a, 64 * 7168 * 2));
  CHECK(cudaMemset(a, 0, 64 * 7168 * 2));
  CHECK(cudaMalloc(&out, 64 * 7168 * 2));
  for (const Shape& sh : shapes) {
    uint8_t *w, *ws;
    const size_t wb = size_t(384) * sh.N * sh.K / 2;
    CHECK(cudaMalloc(&w, wb));
    CHECK(cudaMalloc(&ws, wb / 8));
    CHECK(cudaMemset(w, 0x11, wb));
    CHECK(cudaMemset(ws, 0x38, wb / 8));
    for (int n : {1, 4, 8, 16}) run<4, 2>(sh, n, w, ws, alpha, a, out, offsets, flush, n == 8);
    CHECK(cudaFree(w));
    CHECK(cudaFree(ws));
  }
  return 0;
}
