// One SM120 NVFP4 x NVFP4 -> BF16 ptr-array grouped GEMM config (CUTLASS 3.x collective builders,
// OpClassBlockScaledTensorOp, TN, per-expert alpha). Included by exactly one small TU per config
// (w4a4_t*.cu) through K2K_W4A4_CONFIG, so a config costs one line and a broken one names itself.
//
// SMEM: CUTLASS 4.2's StageCountAutoCarveout does not count the ptr-array kernel's tensormaps,
// scheduler pipeline and response slots, so on SM120's 101 376 B it can pick a stage count whose
// SharedStorage does not fit (NVIDIA/cutlass#3096). Every config therefore names its StageCount and
// static_asserts the whole kernel SharedStorage against SM120's limit (also recorded through
// K2K_SMEM_BUDGET); docs/sm120.md has the table.
#pragma once
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

#include "common/smem_budget.h"
#include "cutlass_sm120/w4a4_cute_types.cuh"
#include "cutlass_sm120/w4a4_types.h"

namespace k2k::sm120 {

template <int TileM, int TileN, int TileK, int Stages, bool Pingpong>
struct W4A4Gemm {
  using ElementA = cutlass::nv_float4_t<cutlass::float_e2m1_t>;
  using ElementB = cutlass::nv_float4_t<cutlass::float_e2m1_t>;
  using ElementD = cutlass::bfloat16_t;
  using ElementC = void;                       // no residual: D = alpha_e * acc
  using ElementAccumulator = float;
  static constexpr int kAlignA = 32;           // 32 e2m1 = 16 bytes (TMA)
  static constexpr int kAlignB = 32;
  static constexpr int kAlignD = 8;            // 8 bf16 = 16 bytes
  using TileShape = cute::Shape<cute::Int<TileM>, cute::Int<TileN>, cute::Int<TileK>>;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;   // SM120: no multicast, cluster 1
  using MainloopSchedule = cute::conditional_t<Pingpong, cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong,
                                               cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>;
  using EpilogueSchedule = cute::conditional_t<Pingpong, cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong,
                                               cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative>;
  // alpha comes per group through alpha_ptr_array; beta is 0 and C is void.
  using Fusion = cutlass::epilogue::fusion::LinearCombination<ElementD, float, ElementC, float>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm120, cutlass::arch::OpClassBlockScaledTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, float, ElementC, LayoutDTag*, kAlignD,
      ElementD, LayoutDTag*, kAlignD, EpilogueSchedule, Fusion>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm120, cutlass::arch::OpClassBlockScaledTensorOp, ElementA, LayoutATag*, kAlignA, ElementB,
      LayoutBTag*, kAlignB, ElementAccumulator, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCount<Stages>,    // explicit: never the auto carveout (see above)
      MainloopSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

  // Dynamic shared memory the launch requests: the kernel's whole SharedStorage.
  static constexpr int kSmemBytes = static_cast<int>(sizeof(typename GemmKernel::SharedStorage));
  // The built sm_120a cubins also carry 1 024 B of static shared memory (cuobjdump
  // --dump-resource-usage, CUTLASS 4.2, all three configs); the per-block limit covers both.
  static constexpr int kStaticSmemAllowance = 1024;
  static constexpr int kTotalSmemBytes = kSmemBytes + kStaticSmemAllowance;
  static constexpr int kMainloopSmemBytes = static_cast<int>(sizeof(typename CollectiveMainloop::SharedStorage));
  static constexpr int kEpilogueSmemBytes = static_cast<int>(sizeof(typename CollectiveEpilogue::SharedStorage));
  static_assert(kTotalSmemBytes <= ::k2k::kSm120SmemLimit,
                "k2kernels: this W4A4 config's SharedStorage exceeds SM120's 101376 B; lower its StageCount");
  static_assert(CollectiveMainloop::DispatchPolicy::Stages == Stages, "StageCount was not honoured");

  // The setup kernel writes these arrays with the types from w4a4_cute_types.cuh.
  static_assert(cute::is_same_v<typename GemmKernel::InternalStrideA, StrideA>, "StrideA mismatch");
  static_assert(cute::is_same_v<typename GemmKernel::InternalStrideB, StrideB>, "StrideB mismatch");
  static_assert(cute::is_same_v<typename GemmKernel::InternalStrideD, StrideD>, "StrideD mismatch");
  static_assert(cute::is_same_v<typename CollectiveMainloop::InternalLayoutSFA, LayoutSF>, "LayoutSFA mismatch");
  static_assert(cute::is_same_v<typename CollectiveMainloop::InternalLayoutSFB, LayoutSF>, "LayoutSFB mismatch");

  static W4A4TileInfo info(const char* name) {
    return {name, TileM, TileN, TileK, Stages, kSmemBytes, kTotalSmemBytes, kMainloopSmemBytes, kEpilogueSmemBytes};
  }

  static typename Gemm::Arguments arguments(const W4A4Problem& p, const W4A4SetupArrays& arr) {
    using MainArgs = typename GemmKernel::MainloopArguments;
    using EpiArgs = typename GemmKernel::EpilogueArguments;
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = p.sm_count;

    MainArgs mainloop{};
    mainloop.ptr_A = reinterpret_cast<decltype(mainloop.ptr_A)>(arr.ptr_a);
    mainloop.dA = static_cast<StrideA*>(arr.stride_a);
    mainloop.ptr_B = reinterpret_cast<decltype(mainloop.ptr_B)>(arr.ptr_b);
    mainloop.dB = static_cast<StrideB*>(arr.stride_b);
    mainloop.ptr_SFA = reinterpret_cast<decltype(mainloop.ptr_SFA)>(arr.ptr_sfa);
    mainloop.layout_SFA = static_cast<LayoutSF*>(arr.layout_sfa);
    mainloop.ptr_SFB = reinterpret_cast<decltype(mainloop.ptr_SFB)>(arr.ptr_sfb);
    mainloop.layout_SFB = static_cast<LayoutSF*>(arr.layout_sfb);

    EpiArgs epilogue{};
    epilogue.thread.alpha = 0.f;
    epilogue.thread.beta = 0.f;
    epilogue.thread.alpha_ptr_array = arr.ptr_alpha;
    epilogue.thread.dAlpha = {cute::_0{}, cute::_0{}, 1};     // one alpha per group
    epilogue.ptr_C = nullptr;
    epilogue.dC = nullptr;
    epilogue.ptr_D = reinterpret_cast<decltype(epilogue.ptr_D)>(arr.ptr_d);
    epilogue.dD = static_cast<StrideD*>(arr.stride_d);

    typename GemmKernel::TileSchedulerArguments scheduler;
    // Problem shapes live only on the device (nullptr host shapes): no host sync, graph-capturable.
    return typename Gemm::Arguments{cutlass::gemm::GemmUniversalMode::kGrouped,
                                    {p.E, static_cast<UnderlyingProblemShape*>(arr.problem_shapes), nullptr},
                                    mainloop, epilogue, hw, scheduler};
  }

  static size_t workspace_bytes(const W4A4Problem& p, const W4A4SetupArrays& arr) {
    return Gemm::get_workspace_size(arguments(p, arr));
  }

  static const char* run(const W4A4Problem& p, const W4A4SetupArrays& arr, void* workspace, cudaStream_t stream) {
    auto args = arguments(p, arr);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return "CUTLASS can_implement rejected the problem";
    if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return "CUTLASS initialize failed";
    if (gemm.run(stream) != cutlass::Status::kSuccess) return "CUTLASS kernel launch failed";
    return nullptr;
  }
};

}  // namespace k2k::sm120

// Defines the three entry points of one config (declared in w4a4_types.h) and its SMEM budget entry.
#define K2K_W4A4_CONFIG(NAME, TM, TN, TK, STAGES, PINGPONG)                                                   \
  namespace k2k::sm120 {                                                                                      \
  using Config_##NAME = W4A4Gemm<TM, TN, TK, STAGES, PINGPONG>;                                               \
  K2K_SMEM_BUDGET(w4a4_sm120_##NAME, Config_##NAME::kTotalSmemBytes);                                              \
  W4A4TileInfo w4a4_info_##NAME() { return Config_##NAME::info(#NAME); }                                      \
  size_t w4a4_workspace_##NAME(const W4A4Problem& p, const W4A4SetupArrays& a) {                              \
    return Config_##NAME::workspace_bytes(p, a);                                                              \
  }                                                                                                           \
  const char* w4a4_run_##NAME(const W4A4Problem& p, const W4A4SetupArrays& a, void* ws, cudaStream_t s) {     \
    return Config_##NAME::run(p, a, ws, s);                                                                   \
  }                                                                                                           \
  }
