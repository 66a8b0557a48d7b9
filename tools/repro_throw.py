# Reproduces the segfault seen when a k2kernels C++ launcher throws (device debugging aid).
import sys
import torch
import k2kernels
k2kernels.load_kernels()
which = sys.argv[1]
try:
    if which == "quant":
        torch.ops.k2kernels.quantize_nvfp4(torch.randn(4, 40, device="cuda").bfloat16(), torch.tensor(0.1, device="cuda"))
    else:
        k = torch.randn(3, 2, 16, device="cuda").bfloat16()
        kc = torch.zeros(4, 4, 2, 16, device="cuda")
        torch.ops.k2kernels.kv_cache_append(k, None, kc, None, torch.zeros(3, dtype=torch.long, device="cuda"), torch.tensor(1., device="cuda"), None)
except ValueError as e:
    print("OK ValueError:", e)
