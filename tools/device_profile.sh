#!/usr/bin/env bash
# One H200 call (the `device` tool, carry [".whl"]) for performance work: builds the kernel families,
# profiles the decode moe_gemm kernel with Nsight Compute, and runs the benchmarks named in $BENCHES.
# Logs go to $OUT. Each step has its own time limit.
set -u
OUT=${OUT:-/tmp/k2k_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD MAX_JOBS=16 K2K_CACHE_DIR=/tmp/k2k PYTHONUNBUFFERED=1 K2K_SMEM_LIMIT=101376
pids=()
for fam in ${FAMILIES:-quant attention routing moe_gemm fused_moe}; do
  timeout 240 python3 -m k2kernels.build --check --families "$fam" > "/tmp/build_$fam.log" 2>&1 & pids+=($!)
done
wait "${pids[@]}"; grep -h -E "error|FAILED|ok " /tmp/build_*.log | head -20 | tee "$OUT/build.log"
export K2K_REQUIRE_KERNELS=1
if [[ -n ${TESTS:-} ]]; then   # e.g. TESTS="tests/test_moe_gemm.py -k alt_config"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 $TESTS > "$OUT/tests.log" 2>&1; echo "== tests rc=$?"; tail -3 "$OUT/tests.log"
fi
# Nsight Compute: the decode kernel at T = 1 (gate_up), the sections that say what limits it
for cfg in ${NCU_CFGS:-default}; do
  env $( [[ $cfg != default ]] && echo K2K_MOE_GEMM_CFG=$cfg ) timeout 120 ncu --clock-control none -k regex:moe_gemm_persist \
    --launch-skip 3 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --section SchedulerStats --section LaunchStats \
    python3 benchmarks/profile_moe_gemm.py --T 1 --shape gate_up > "$OUT/ncu_$cfg.log" 2>&1
done
for b in ${BENCHES:-}; do
  case $b in
    moe_gemm) timeout 120 python3 benchmarks/bench_moe_gemm.py --quick --iters 10 --json /tmp/bm.json ;;
    attention) timeout 150 python3 benchmarks/bench_attention.py --json /tmp/ba.json ;;
    router) timeout 60 python3 benchmarks/bench_router.py --quick ;;
    fused) timeout 90 python3 benchmarks/bench_fused_moe.py --tokens 1,8,64,512,4096 --iters 10 --layouts linear,tiled --json /tmp/bf.json ;;
    demo) timeout 90 python3 -m k2kernels --tokens 1 --sweep 1,64,512 --plot "$OUT/roofline.png" ;;
  esac > "$OUT/bench_$b.log" 2>&1
  echo "== $b rc=$?"; tail -3 "$OUT/bench_$b.log"
done
