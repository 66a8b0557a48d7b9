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
# fp8_kv_attention_lse: the kernel keeps the log-sum-exp in fp32 (scores from fp32-accumulated MMAs of
# the same fp8 operands, MUFU ex2/lg2 with ~2^-22 relative error, another summation order): |lse - ref|
# <= ATTN_LSE_ATOL * (1 + |ref|), far below what a wrong key set or scale changes (>= ~1e-2 here).
ATTN_LSE_ATOL = 1e-4
# The reference's (fp32) log-sum-exp vs an fp64 oracle on the same dequantized operands: fp32 rounding
# of the scores (|s| <~ 10, 2^-24 relative) and of one logsumexp, so 1e-5 absolute and relative.
REF_LSE_TOL = 1e-5

# Router weights are fp32 end to end; differences come only from exp/sigmoid implementations
# (a few ulp) and summation order in the softmax denominator.
ROUTER_ATOL = 1e-5
# Router selection scores c = s + bias compared at the kernel's vs the reference's ids: the kernel's
# __expf/sigmoid differ from torch's by a few ulp of values <= ~1 (+ bias), so a near-tie may swap
# two experts whose c differ by ~1e-7; 1e-5 leaves room and still catches a wrong pick (random
# scores at E = 1024 differ by ~1e-3 between neighbours).
ROUTER_SCORE_ATOL = 1e-5

# fused_moe (issue 7). The reference rounds the gate_up output, the SiLU*up activations and the down
# output to bf16 (2^-9 relative each) like the CUDA composite; vs an fp64 loop without those roundings
# the three roundings compound to ~3 * 2^-9 ~ 6e-3 relative per output, less in the Frobenius norm
# (errors average out over H); 1.5e-2 leaves room, and a wrong expert, weight or missing shared term
# gives O(1). The CUDA composite vs the reference on the same NVFP4 operands differs only by fp32
# summation order inside the GEMMs (bf16 flips of single intermediates): the same bound.
FUSED_MOE_REL_FRO = 1.5e-2
# Elementwise: |out - ref| <= FUSED_MOE_ATOL_REL * max|ref| + 2^-6 * |ref| (two bf16 roundings on the path).
FUSED_MOE_ATOL_REL = 2e-2
FUSED_MOE_RTOL = 2 ** -6

# Multi-process MoE (k2kernels.parallel) vs the single-process moe_forward on the same weights.
# TP: each rank's down GEMM output and its combined partial are rounded to bf16 (2^-9 relative
# each) before the all-reduce, and a bf16 all-reduce rounds again per step; the single process
# rounds the full sums once. Partials are of the size of the sum (random signs), so the extra error
# is a few bf16 ulps of the output. Measured on the tests' tiny layer (gloo, CPU, 2026-11-29):
# relative Frobenius 3.7e-3 (world 2), 4.3e-3 (world 4, bf16 reduce), 3.7e-3 (world 4, fp32
# reduce); elementwise excess over 2^-7 * |ref| at most 2.4e-3 * max|ref|. 1e-2 leaves ~2-4x margin
# and still fails an inconsistent gate/up shard (error ~1, test_parallel.py).
# EP with dedup=True has the same kind of rounding (each owner's partial is bf16) and uses these
# bounds: measured 2.4e-3 to 2.9e-3 relative Frobenius, excess at most 1.5e-3 * max|ref|.
# Elementwise: |out - ref| <= PARALLEL_TP_ATOL_REL * max|ref| + 2^-7 * |ref|.
PARALLEL_TP_REL_FRO = 1e-2
PARALLEL_TP_ATOL_REL = 1e-2
# EP: every pair's expert output is computed from the same rows by the same op and combined in the
# same fp32 order as moe_forward, so on CPU (the reference GEMM) it is bit-exact (asserted with
# torch.equal; measured: equal at world 2 and 4, both dispatch modes, two placements); GPU kernels may
# tile a group of M rows differently from one of M' rows (fp32 summation order), within the
# moe_gemm bound GEMM_REL_FRO.
PARALLEL_EP_REL_FRO = 1e-2
