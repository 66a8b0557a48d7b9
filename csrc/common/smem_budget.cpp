// The per-library table behind K2K_SMEM_BUDGET, exported as k2k_smem_budgets_<family> (the family
// name comes from -DK2K_FAMILY=...; one name per library because torch loads them RTLD_GLOBAL).
#include "common/smem_budget.h"

#include <vector>

namespace {
struct Entry {
  const char* tag;
  int bytes;
};
std::vector<Entry>& table() {
  static std::vector<Entry> t;
  return t;
}
}  // namespace

namespace k2k {
int register_smem_budget(const char* tag, int bytes) {
  table().push_back({tag, bytes});
  return bytes;
}
}  // namespace k2k

#define K2K_CONCAT_(a, b) a##b
#define K2K_CONCAT(a, b) K2K_CONCAT_(a, b)
#ifndef K2K_FAMILY
#define K2K_FAMILY unknown
#endif

// Copies up to `cap` entries; returns how many exist.
static int copy_table(const char** tags, int* bytes, int cap) {
  const auto& t = table();
  for (int i = 0; i < static_cast<int>(t.size()) && i < cap; ++i) {
    tags[i] = t[i].tag;
    bytes[i] = t[i].bytes;
  }
  return static_cast<int>(t.size());
}

#define K2K_EXPORT_TABLE(fam)                                                                           \
  extern "C" __attribute__((visibility("default"))) int K2K_CONCAT(k2k_smem_budgets_, fam)(const char** tags, \
                                                                                        int* bytes, int cap) { \
    return copy_table(tags, bytes, cap);                                                                \
  }

#ifdef K2K_SINGLE_LIBRARY
// CMake builds every family into one library; launchers detect a family by its table's symbol
// (moe_gemm looks for cutlass_sm120's, the SM120 GEMM for quant's), so export one name per family
// compiled in (K2K_HAS_<FAMILY> defines come from CMakeLists.txt).
#ifdef K2K_HAS_QUANT
K2K_EXPORT_TABLE(quant)
#endif
#ifdef K2K_HAS_ATTENTION
K2K_EXPORT_TABLE(attention)
#endif
#ifdef K2K_HAS_ROUTING
K2K_EXPORT_TABLE(routing)
#endif
#ifdef K2K_HAS_MOE_GEMM
K2K_EXPORT_TABLE(moe_gemm)
#endif
#ifdef K2K_HAS_FUSED_MOE
K2K_EXPORT_TABLE(fused_moe)
#endif
#ifdef K2K_HAS_CUTLASS_SM120
K2K_EXPORT_TABLE(cutlass_sm120)
#endif
#else
K2K_EXPORT_TABLE(K2K_FAMILY)
#endif
