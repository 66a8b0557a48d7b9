"""Deployment planner: pins the seed's arithmetic (with tolerances and reasons) and checks the
model's internal consistency. No GPU, no torch."""
import json
import pathlib
import subprocess
import sys
from dataclasses import replace

import pytest

from k2kernels.plan import GPUS, MODELS, Parallelism, PlanRequest, evaluate, make_plan
from k2kernels.plan.memory import (active_params, expert_bytes, kv_bytes_per_token,
                                   kv_bytes_per_token_per_layer, model_params, stage_layers)
from k2kernels.plan.planner import candidate_layouts
from k2kernels.plan.throughput import distinct_experts

K26 = MODELS["k2.6"]
RIG = PlanRequest(model="k2.6", gpu="rtx-pro-6000", gpus=4, context=8192, batch=1)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_expert_bytes_match_contract():
    # contract.md: 24 772 608 B per NVFP4 expert at H 7168, I 2048 (gate_up + down + e4m3 scales)
    assert expert_bytes(K26, "nvfp4") == 24_772_608
    assert expert_bytes(K26, "bf16") == 3 * 7168 * 2048 * 2


def test_seed_per_expert_and_total_expert_memory():
    per_expert = expert_bytes(K26, "nvfp4") * K26.moe_layers / 1e9
    # seed: "each ~1.5 GB at NVFP4"; "~" = rounded to 2 digits, so within 2%
    assert per_expert == pytest.approx(1.5, rel=0.02)
    # seed: "~570 GB" for 384 experts; 3 significant digits, so within 0.5%
    assert per_expert * 384 == pytest.approx(570, rel=0.005)


def test_seed_tp4_384_experts_does_not_fit():
    r = evaluate(RIG, Parallelism(4, 1, 1))
    # seed: 570 / 4 = ~143 GB of experts per GPU (3 significant digits -> 0.5%)
    assert r["worst_stage"]["routed_experts_gb"] == pytest.approx(143, rel=0.005)
    assert not r["fits"]
    assert r["worst_stage"]["total_gb"] > GPUS["rtx-pro-6000"].capacity_gb


def test_no_layout_of_4_cards_holds_384_experts():
    """PP and EP redistribute bytes; the sum (570 GB) exceeds 4 x 102.6 GB, so nothing fits."""
    for par in candidate_layouts(RIG):
        r = evaluate(RIG, par)
        assert not r["fits"], par
        total_experts = sum(s["routed_experts_gb"] for s in r["stages"]) * par.tp
        assert total_experts >= 570 * 0.995   # every layout stores all experts once (EP rounds up)


def test_tp4_pp2_needs_and_fits_8_cards():
    with pytest.raises(ValueError, match="GPUs"):
        candidate_layouts(replace(RIG, tp=4, pp=2))        # 8 GPUs asked on a 4-GPU rig
    r = evaluate(replace(RIG, gpus=8), Parallelism(4, 2, 1))
    assert r["fits"]
    # half the MoE layers on each stage: 30 x 384 x 24.77 MB / 4
    assert r["worst_stage"]["routed_experts_gb"] == pytest.approx(30 * 384 * 24_772_608 / 4 / 1e9, rel=1e-9)


def test_reap_256_tp4_verdict_depends_on_dense_precision():
    reap = replace(RIG, experts=256)
    bf16 = evaluate(replace(reap, dense="bf16", context=1), Parallelism(4, 1, 1))
    # seed: 256 x 1.5 / 4 = ~95 GB of experts per GPU
    assert bf16["worst_stage"]["routed_experts_gb"] == pytest.approx(95, rel=0.01)
    # BF16 attention + shared expert (~5.5 GB/GPU) + embeddings (1.2) + 1.5 GB overhead exceed the
    # 7.5 GB left on a 102.6 GB card: no context at all fits.
    assert not bf16["fits"] and bf16["max_kv_tokens"] == 0
    fp8 = evaluate(replace(reap, dense="fp8"), Parallelism(4, 1, 1))
    assert fp8["fits"]
    # the room left is ~1-3 GB; at ~31 KB/token/GPU (GQA 8x128 fp8 over TP4) that is 10K..100K tokens
    assert 10_000 < fp8["max_kv_tokens"] < 100_000
    long = evaluate(replace(reap, dense="fp8", context=131072, batch=8), Parallelism(4, 1, 1))
    assert not long["fits"]


def test_max_kv_tokens_is_the_fit_boundary():
    req = replace(RIG, experts=256, dense="fp8")
    n = evaluate(req, Parallelism(4, 1, 1))["max_kv_tokens"]
    assert evaluate(replace(req, context=n), Parallelism(4, 1, 1))["fits"]
    assert not evaluate(replace(req, context=n + 100), Parallelism(4, 1, 1))["fits"]


def test_memory_components_add_up():
    for par in candidate_layouts(RIG):
        for s in evaluate(RIG, par)["stages"]:
            parts = (s["routed_experts_gb"] + s["dense_gb"] + s["embed_head_gb"] + s["router_norms_gb"]
                     + s["kv_gb"] + s["activations_gb"] + s["overhead_gb"])
            assert s["total_gb"] == pytest.approx(parts, rel=1e-12)
            assert s["margin_gb"] == pytest.approx(s["capacity_gb"] - s["total_gb"], abs=1e-9)


def test_real_kimi_k2_parameter_counts():
    m = MODELS["kimi-k2"]
    # Moonshot's model card: 1 T total, 32 B activated ("1T" is rounded: 1.03 T from the shapes)
    assert model_params(m)["total"] == pytest.approx(1.03e12, rel=0.01)
    assert active_params(m) == pytest.approx(32e9, rel=0.03)


def test_kv_bytes_per_token():
    m = MODELS["kimi-k2"]
    assert kv_bytes_per_token(m, "fp8") == 61 * (512 + 64)                 # MLA latent + rope
    assert kv_bytes_per_token_per_layer(m, "bf16", 4) == (512 + 64) * 2      # not split by TP
    assert kv_bytes_per_token(K26, "fp8") == 61 * 2 * 8 * 128
    assert kv_bytes_per_token_per_layer(K26, "fp8", 4) == 2 * 2 * 128       # 8 KV heads / 4 ranks
    assert kv_bytes_per_token_per_layer(K26, "fp8", 16) == 2 * 1 * 128      # replicated past 8


def test_stage_split_covers_all_layers():
    for pp in (1, 2, 3, 4, 8):
        stages = stage_layers(K26, pp)
        assert [i for r in stages for i in r] == list(range(61))
        assert max(map(len, stages)) - min(map(len, stages)) <= 1


def test_distinct_experts_limits():
    assert distinct_experts(384, 8, 1) == pytest.approx(8)
    assert distinct_experts(384, 8, 10_000) == pytest.approx(384)
    assert distinct_experts(384, 8, 2) < 16


def test_decode_bytes_match_active_parameters():
    """TP4 batch 1 reads 1/4 of the active weights plus the replicated router rows."""
    d = evaluate(RIG, Parallelism(4, 1, 1))["decode"]
    p = model_params(K26)
    active_experts = K26.moe_layers * K26.top_k * expert_bytes(K26, "nvfp4")
    bf16_dense = 2 * (p["attention"] + p["shared_experts"] + p["dense_mlp"] + K26.vocab * K26.hidden)
    router = 2 * p["router"]  # replicated, read whole by every rank
    expected = (active_experts + bf16_dense) / 4 + router
    assert d["weight_gb_per_step_per_gpu"] * 1e9 == pytest.approx(expected, rel=0.01)  # norms ~0
    assert d["bound_tok_s"] == pytest.approx(1792e9 / (expected + d["kv_gb_per_step_per_gpu"] * 1e9), rel=0.01)


def test_decode_bounds_are_ordered():
    r = evaluate(RIG, Parallelism(4, 1, 1))["decode"]
    assert r["estimate_tok_s"] < r["bound_tok_s"]
    pp = evaluate(RIG, Parallelism(2, 2, 1))["decode"]
    assert pp["bound_tok_s"] < r["bound_tok_s"]   # batch 1 through 2 stages uses half the GPUs at a time
    big = evaluate(replace(RIG, batch=32), Parallelism(4, 1, 1))["decode"]
    assert big["bound_tok_s"] > r["bound_tok_s"]
    h200 = evaluate(replace(RIG, gpu="h200"), Parallelism(4, 1, 1))["decode"]
    assert h200["estimate_tok_s"] > r["estimate_tok_s"] and h200["link_ms"] < r["link_ms"]


def test_seed_checks_flag_the_differences():
    checks = {c["claim"]: c for c in make_plan(RIG)["seed_checks"]}
    assert checks["one expert across all MoE layers at NVFP4"]["holds"]
    assert checks["384 experts at NVFP4"]["holds"]
    hybrid = next(c for k, c in checks.items() if k.startswith("hybrid"))
    assert not hybrid["holds"] and "8 GPUs" in hybrid["ours"]
    assert not checks["k2.6 total / active parameters"]["holds"]   # 1.03 T, not ~700 B


def test_plan_package_does_not_import_torch():
    for f in (ROOT / "k2kernels" / "plan").glob("*.py"):
        src = f.read_text()
        assert "import torch" not in src and "from torch" not in src, f


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "k2kernels.plan", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_json_and_table():
    r = run_cli("--model", "k2.6", "--gpu", "rtx-pro-6000", "--gpus", "4", "--experts", "256", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [p["layout"] for p in plan["plans"]][:2] == ["TP4", "TP2xPP2"]
    assert plan["model"]["experts"] == 256
    t = run_cli("--model", "kimi-k2", "--gpus", "8", "--tp", "4", "--pp", "2")
    assert t.returncode == 0, t.stderr
    assert "TP4xPP2" in t.stdout and "Seed check" in t.stdout and "Assumptions" in t.stdout


def test_cli_rejects_bad_layout():
    r = run_cli("--gpus", "4", "--tp", "4", "--ep", "2")
    assert r.returncode == 2 and "ep must be 1 or equal to tp" in r.stderr
