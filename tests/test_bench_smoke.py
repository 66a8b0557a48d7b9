"""The decode benchmarks stay runnable: their --smoke mode (CPU, tiny shapes, reference fallbacks, no
timing) runs every code path once. Timings are not looked at; they mean nothing on CPU."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_smoke(script, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
    # The smoke run hides the GPU on purpose, so it must be allowed the reference fallbacks even when the
    # suite itself runs with K2K_REQUIRE_KERNELS=1 (as the device runs do).
    env.pop("K2K_REQUIRE_KERNELS", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--smoke", *extra], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_decode_layers_smoke():
    """Every row of the table, and (inside the script) layer l's router picks exactly its experts."""
    out = run_smoke("bench_decode_layers.py")
    for row in ("moe_gemm gate_up", "moe_gemm down", "fused_moe", "torch._grouped_mm gate_up (BF16)",
                "torch._grouped_mm down (BF16)", "torch composite (BF16)"):
        assert f"\n{row} " in out, (row, out)


@pytest.mark.slow
def test_bench_fused_moe_smoke():
    out = run_smoke("bench_fused_moe.py", "--tokens", "1,8", "--json", os.devnull)
    assert "T=    1" in out and "T=    8" in out, out
