// Programmatic dependent launch (PDL, sm_90+): a kernel launched with programmatic stream serialization
// may begin while the stream's previous kernel is still running; it must call pdl_wait() before it
// reads anything that kernel writes (or writes anything that kernel reads). The previous kernel lets
// its dependents launch early with pdl_launch_dependents(); without it they launch when its blocks exit.
// Both are no-ops when the launch did not ask for PDL, and compile to nothing before sm_90.
// griddepcontrol.wait waits for the immediately previous kernel only; kernels further back are covered
// because that kernel itself started only after them (a plain launch) or waited for them (every CTA
// of a PDL-launched kernel here calls pdl_wait before it can finish).
#pragma once
#include <cuda_runtime.h>
#include <utility>

#include "common/device_info.h"

namespace k2k {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization allowed (PDL
// exists from compute capability 9.0; older GPUs get a plain launch, where the kernel's griddepcontrol
// instructions compile to nothing).
template <typename... KernelArgs, typename... Args>
cudaError_t launch_with_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                            Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = current_device_cc_major() >= 9 ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace k2k
