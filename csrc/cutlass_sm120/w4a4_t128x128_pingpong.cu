// W4A4 SM120 grouped GEMM config t128x128_pingpong: tile 128x128x128, pingpong schedule, 4 pipeline stages (explicit,
// see w4a4_gemm.cuh and the SMEM table in docs/sm120.md). One heavy CUTLASS instantiation per TU.
#include "cutlass_sm120/w4a4_gemm.cuh"

K2K_W4A4_CONFIG(t128x128_pingpong, 128, 128, 128, 4, true)
