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
extern "C" __attribute__((visibility("default"))) int K2K_CONCAT(k2k_smem_budgets_, K2K_FAMILY)(
    const char** tags, int* bytes, int cap) {
  const auto& t = table();
  for (int i = 0; i < static_cast<int>(t.size()) && i < cap; ++i) {
    tags[i] = t[i].tag;
    bytes[i] = t[i].bytes;
  }
  return static_cast<int>(t.size());
}
