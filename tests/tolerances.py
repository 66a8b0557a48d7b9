"""One table of test tolerances; each entry says where its number comes from."""

# Bit-exact: the kernels reproduce the reference's fp32 operations (same IEEE division, same RNE
# conversions), so quantized codes, scales and FP8 cache bytes must match exactly.
EXACT = 0

# BF16 output of an fp32-accumulated dot product vs the fp32 reference on the same quantized
# operands: one bf16 rounding of the result (2^-8 relative) plus fp32 summation-order differences
# (~K * 2^-24, negligible for K <= 7168). Relative Frobenius error bound:
GEMM_REL_FRO = 1e-2
# Elementwise: |out - ref| <= GEMM_ATOL_REL * max|ref| + 2^-7 * |ref| (bf16 rounding of each output).
GEMM_ATOL_REL = 2e-3
BF16_RTOL = 2 ** -7

# Attention: fp32 softmax and bf16 output; online-softmax rescaling reorders sums. Same bf16 bound.
ATTN_ATOL = 2e-2
ATTN_RTOL = 2 ** -7
# fp8_kv_attention kernel vs reference (same FP8 cache): the kernel rounds P to fp16 for the PV MMA
# (2^-11 relative per weight, averaging out over keys) and the output to bf16 (2^-9); everything
# else is fp32. Relative Frobenius bound, and elementwise |err| <= ATTN_ATOL_REL * max|ref| + ATTN_RTOL * |ref|.
ATTN_REL_FRO = 1e-2
ATTN_ATOL_REL = 4e-3

# Router weights are fp32 end to end; differences come only from exp/sigmoid implementations
# (a few ulp) and summation order in the softmax denominator.
ROUTER_ATOL = 1e-5
# Router selection scores c = s + bias compared at the kernel's vs the reference's ids: the kernel's
# __expf/sigmoid differ from torch's by a few ulp of values <= ~1 (+ bias), so a near-tie may swap
# two experts whose c differ by ~1e-7; 1e-5 leaves room and still catches a wrong pick (random
# scores at E = 1024 differ by ~1e-3 between neighbours).
ROUTER_SCORE_ATOL = 1e-5
