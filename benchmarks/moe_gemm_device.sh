#!/bin/bash
# One H200 device call for the moe_gemm family: build, tests, sanitizer, benchmark (logs under $OUT).
# Usage (device tool, carry .whl): bash benchmarks/moe_gemm_device.sh [--quick]
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD MAX_JOBS=16 K2K_FAMILIES=moe_gemm K2K_REQUIRE_KERNELS=1 K2K_CACHE_DIR=/tmp/k2k PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
t0=$(date +%s)
python3 -c "import k2kernels; print(k2kernels.load_kernels()['moe_gemm'])" 2>&1 | tail -3 | tee $OUT/build.log
echo "build $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -rfE tests/test_moe_gemm.py -k "not bad_input_value and not opcheck" 2>&1 | tail -40 > $OUT/test.log
tail -15 $OUT/test.log
timeout 60 python3 -m pytest -q -rfE tests/test_moe_gemm.py tests/test_ops.py -k "(opcheck or compile or bad_input) and moe_gemm and not bad_input_value" 2>&1 | tail -60 > $OUT/test_ops.log
tail -25 $OUT/test_ops.log
if command -v gdb >/dev/null; then
  timeout 60 gdb -q -batch -ex run -ex bt --args python3 -m pytest -q -x tests/test_moe_gemm.py -k bad_input_value 2>&1 | tail -40 > $OUT/badinput.log
else
  timeout 60 python3 -m pytest -q -x tests/test_moe_gemm.py -k bad_input_value 2>&1 | tail -40 > $OUT/badinput.log
fi
tail -12 $OUT/badinput.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q tests/test_moe_gemm.py -k "sanitizer_case or (small and bytes and linear and 640)" > $OUT/memcheck_full.log 2>&1
echo "memcheck rc=$?"; tail -8 $OUT/memcheck_full.log
timeout 200 python3 benchmarks/bench_moe_gemm.py "$@" 2>&1 | tee $OUT/bench.log
echo "total $(( $(date +%s) - t0 )) s"
