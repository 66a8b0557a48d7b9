// Compile-time shared-memory budget for every kernel config (SM120 has 101 376 B per block).
//
//   K2K_SMEM_BUDGET(moe_gemm_decode_m64, kSmemBytes);
//
// static_asserts the bytes (dynamic + static) fit SM120, and records (tag, bytes) in a table that
// `python -m k2kernels.build --check` reads from the built library (the cubin only knows static
// shared memory; dynamic sizes exist only in the launcher, so kernels declare them here).
#pragma once

namespace k2k {
constexpr int kSm120SmemLimit = 101376;
__attribute__((visibility("hidden"))) int register_smem_budget(const char* tag, int bytes);
}  // namespace k2k

#define K2K_SMEM_BUDGET(tag, bytes)                                                        \
  static_assert((bytes) <= ::k2k::kSm120SmemLimit,                                         \
                "k2kernels: " #tag " needs more shared memory than SM120's 101376 B");     \
  [[maybe_unused]] static const int k2k_smem_budget_##tag = ::k2k::register_smem_budget(#tag, (bytes))
