// The CuTe/CUTLASS types of the per-expert argument arrays, shared by the problem-setup kernel
// (w4a4_problem_setup.cu, which only needs these light headers) and the GEMM configs
// (w4a4_gemm.cuh static_asserts that its kernel expects exactly these types).
#pragma once
#include "cute/tensor.hpp"
#include "cutlass/detail/layout.hpp"
#include "cutlass/detail/sm100_blockscaled_layout.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/layout/matrix.h"

namespace k2k::sm120 {

// NVFP4: one e4m3 scale per 16 elements along K.
constexpr int kSfVec = 16;

using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;   // (M, N, K) per expert
using UnderlyingProblemShape = ProblemShape::UnderlyingProblemShape;

// TN: A row-major [M, K], B "column-major" [K, N] = our weights [N, K] with K contiguous, D row-major.
using LayoutATag = cutlass::layout::RowMajor;
using LayoutBTag = cutlass::layout::ColumnMajor;
using LayoutDTag = cutlass::layout::RowMajor;
using StrideA = cute::remove_pointer_t<cutlass::detail::TagToStrideA_t<LayoutATag*>>;
using StrideB = cute::remove_pointer_t<cutlass::detail::TagToStrideB_t<LayoutBTag*>>;
using StrideD = cute::remove_pointer_t<cutlass::detail::TagToStrideC_t<LayoutDTag*>>;

using BlkScaledConfig = cutlass::detail::Sm1xxBlockScaledConfig<kSfVec>;
using LayoutSF = BlkScaledConfig::LayoutSF;

}  // namespace k2k::sm120
