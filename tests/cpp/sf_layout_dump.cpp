// Prints the byte offset CUTLASS's Sm1xxBlkScaledConfig<16> gives every (row, k-block) of the SFA and
// SFB scale-factor layouts, for the problem shapes given on the command line (M N K ...).
// tests/test_sm120_layout.py compares these offsets with k2kernels.nvfp4.swizzle_scales: it is the
// proof (no GPU needed) that our Python 128x4 swizzle is the layout the SM120 kernels read.
// Output, one line per shape and operand:  <SFA|SFB> M N K size  off(0,0) off(0,1) ... (row-major
// over [rows, K/16]), where size = cosize of the layout (the padded byte count CUTLASS addresses).
#include <cstdio>
#include <cstdlib>

#include "cutlass/detail/sm100_blockscaled_layout.hpp"

using Config = cutlass::detail::Sm1xxBlockScaledConfig<16>;

template <class Layout>
void dump(const char* which, int M, int N, int K, int rows, Layout layout) {
  std::printf("%s %d %d %d %d", which, M, N, K, int(cute::cosize(layout)));
  for (int r = 0; r < rows; ++r) {
    for (int kb = 0; kb < K / 16; ++kb) {
      // Coordinates are (row, k element, batch): every one of the 16 elements of a block maps to
      // the same byte (stride 0), so the block's first element names it.
      std::printf(" %d", int(layout(r, kb * 16, 0)));
    }
  }
  std::printf("\n");
}

int main(int argc, char** argv) {
  if (argc < 4 || (argc - 1) % 3) {
    std::fprintf(stderr, "usage: %s M N K [M N K ...]\n", argv[0]);
    return 2;
  }
  for (int i = 1; i + 2 < argc; i += 3) {
    const int M = std::atoi(argv[i]), N = std::atoi(argv[i + 1]), K = std::atoi(argv[i + 2]);
    auto shape = cute::make_shape(M, N, K, 1);
    dump("SFA", M, N, K, M, Config::tile_atom_to_shape_SFA(shape));
    dump("SFB", M, N, K, N, Config::tile_atom_to_shape_SFB(shape));
  }
  return 0;
}
