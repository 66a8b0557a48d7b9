"""k2kernels.autotune on CPU: config enumeration, the SMEM filter (before any timing), tuning with a
fake timer, the JSON keys, and the lookup order in-memory -> user file -> bundled -> heuristic."""
import json

import pytest
import torch

from k2kernels import autotune as at

GPU, ARCH = "NVIDIA H200", "sm_90a"
KEY = at.shape_key(M=8, N=4096, K=7168, E=384, act="bf16")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    at.clear_memory()
    monkeypatch.delenv(at.USER_ENV, raising=False)
    yield
    at.clear_memory()


def _table(config, us=1.0, key=KEY, op="moe_gemm"):
    return {GPU: {ARCH: {op: {key: {"config": config, "knobs": {"K2K_MOE_GEMM_KERNEL": config}, "us": us, "all_us": {}}}}}}


def test_lookup_order(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    rec, src = at.lookup("moe_gemm", KEY, GPU, ARCH, bundled_dir=bundled)
    assert rec is None and src == "heuristic"

    (bundled / "h200.json").write_text(json.dumps({"_meta": {"format": 1}, **_table("bundled")}))
    rec, src = at.lookup("moe_gemm", KEY, GPU, ARCH, bundled_dir=bundled)
    assert rec["config"] == "bundled" and src == "bundled"

    user = tmp_path / "mine.json"
    user.write_text(json.dumps(_table("user")))
    monkeypatch.setenv(at.USER_ENV, str(user))
    rec, src = at.lookup("moe_gemm", KEY, GPU, ARCH, bundled_dir=bundled)
    assert rec["config"] == "user" and src.startswith("user:")

    at.remember(_table("memory"))
    rec, src = at.lookup("moe_gemm", KEY, GPU, ARCH, bundled_dir=bundled)
    assert rec["config"] == "memory" and src == "memory"

    # another GPU or arch never borrows these entries
    assert at.lookup("moe_gemm", KEY, "NVIDIA RTX PRO 6000", "sm_120a", bundled_dir=bundled) == (None, "heuristic")
    # an unreadable user file is a warning and falls through, not an error
    at.clear_memory()
    user.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="cannot read tuned configs"):
        rec, src = at.lookup("moe_gemm", KEY, GPU, ARCH, bundled_dir=bundled)
    assert src == "bundled"


def test_lookup_nearest_rows(tmp_path):
    t = {}
    for M, cfg in ((8, "small"), (512, "mid"), (32768, "big")):
        at.merge(t, _table(cfg, key=at.shape_key(M=M, N=4096, K=7168, E=384, act="bf16")))
    at.remember(t)
    pick = lambda M: at.lookup("moe_gemm", at.shape_key(M=M, N=4096, K=7168, E=384, act="bf16"), GPU, ARCH)[0]["config"]
    assert pick(8) == "small" and pick(11) == "small" and pick(400) == "mid" and pick(40000) == "big"
    # beyond MAX_ROW_RATIO (1.5x) of every tuned count: the heuristic, not a far record
    for M in (16, 2048, 8192, 65536):
        assert at.lookup("moe_gemm", at.shape_key(M=M, N=4096, K=7168, E=384, act="bf16"), GPU, ARCH,
                         bundled_dir=tmp_path) == (None, "heuristic"), M
    # other N: no borrowing across shapes (an empty bundled dir: the package's own H200 table has this shape)
    assert at.lookup("moe_gemm", at.shape_key(M=8, N=7168, K=2048, E=384, act="bf16"), GPU, ARCH,
                     bundled_dir=tmp_path)[1] == "heuristic"


def test_knobs_context_restores_env(monkeypatch):
    monkeypatch.setenv("K2K_MOE_GEMM_KERNEL", "pipe")
    with at.knobs({"knobs": {"K2K_MOE_GEMM_KERNEL": "persist", "K2K_X_TEST": "1"}}):
        import os
        assert os.environ["K2K_MOE_GEMM_KERNEL"] == "persist" and os.environ["K2K_X_TEST"] == "1"
    import os
    assert os.environ["K2K_MOE_GEMM_KERNEL"] == "pipe" and "K2K_X_TEST" not in os.environ
    with at.knobs({"knobs": {}}, clear=at.KNOB_VARS):          # "auto": the launcher's own choice
        assert "K2K_MOE_GEMM_KERNEL" not in os.environ
    assert os.environ["K2K_MOE_GEMM_KERNEL"] == "pipe"


def test_configs_enumerate_what_the_launchers_expose():
    cfgs = at.moe_gemm_configs()
    names = {c.name for c in cfgs}
    assert "auto" in names and dict(next(c for c in cfgs if c.name == "auto").knobs) == {}
    kernels = {dict(c.knobs).get("K2K_MOE_GEMM_KERNEL") for c in cfgs if c.name != "auto"}
    assert kernels == {"bulk", "persist", "pipe", "tile", "wgmma"}   # the launcher reads K2K_MOE_GEMM_KERNEL today
    assert names == {"auto", "bulk_t4", "bulk_t8", "persist", "pipe", "tile_m64", "tile_m128", "wgmma_w64", "wgmma_w96",
                     "wgmma_w128"}
    for c in cfgs:                                    # only values the launcher source mentions
        for value in dict(c.knobs).values():
            assert at._launcher_reads("moe_gemm", f'"{value}"'), (c.name, value)
    # every config's SMEM tags name budgets the family declares
    declared = set()
    import re
    for f in (at._paths.csrc_dir() / "moe_gemm").glob("*.cu"):
        declared |= set(re.findall(r"K2K_SMEM_BUDGET\((\w+)", f.read_text()))
    for c in cfgs:
        assert set(c.smem_tags) <= declared, (c.name, set(c.smem_tags) - declared)
    assert {c.name for c in at.sm120_configs()} == {"t128x128", "t128x128_pingpong", "t256x128"}


def test_tune_with_fake_timer_drops_smem_before_timing(tmp_path):
    cfgs = [at.Config("moe_gemm", "a", (("K2K_MOE_GEMM_KERNEL", "pipe"),), smem_tags=("t_a",)),
            at.Config("moe_gemm", "b", (("K2K_MOE_GEMM_KERNEL", "persist"),), smem_tags=("t_b",)),
            at.Config("moe_gemm", "huge", smem_tags=("t_huge",)),
            at.Config("moe_gemm", "steps_down", smem_tags=("t_huge", "t_a")),     # a launcher that can step down
            at.Config("moe_gemm", "broken", smem_tags=())]
    budgets = {"t_a": 50_000, "t_b": 90_000, "t_huge": 150_000}
    speed = {"a": 3e-6, "b": 2e-6, "steps_down": 4e-6, "broken": None}
    timed = []

    def fake_timer(op, dims, cfg):
        timed.append(cfg.name)
        assert cfg.name != "huge", "a config over the SMEM limit was timed"
        if speed[cfg.name] is None:
            raise RuntimeError("launch failed")
        return speed[cfg.name] * (1 + dims["M"] / 1000)

    shapes = [("moe_gemm", dict(M=8, N=4096, K=7168, E=384, act="bf16")),
              ("moe_gemm", dict(M=4096, N=4096, K=7168, E=384, act="bf16")),
              ("moe_gemm_w4a4_sm120", dict(M=8, N=4096, K=7168, E=384, act="nvfp4"))]
    res = at.tune(shapes, GPU, ARCH, smem_limit=101_376, budgets=budgets, timer=fake_timer, progress=False,
                  configs_for=lambda op: cfgs,
                  supported=lambda op: "needs sm_120a" if op.endswith("sm120") else None)
    assert "huge" not in timed and timed.count("a") == 2
    assert [(d[2], d[3]) for d in res.dropped] == [("huge", 150_000)] * 2
    assert any("needs sm_120a" in s[2] for s in res.skipped)
    assert any("broken" in s[2] and "launch failed" in s[2] for s in res.skipped)
    entries = res.table[GPU][ARCH]["moe_gemm"]
    assert set(entries) == {at.shape_key(**d) for op, d in shapes[:2]}
    for rec in entries.values():
        assert rec["config"] == "b" and rec["knobs"] == {"K2K_MOE_GEMM_KERNEL": "persist"}
        assert set(rec["all_us"]) == {"a", "b", "steps_down"} and rec["us"] == min(rec["all_us"].values())
    # with SM120's limit cut to 60 000 B, b (90 000 B) is dropped and a wins
    res2 = at.tune(shapes[:1], GPU, "sm_120a", 60_000, budgets, fake_timer, progress=False, configs_for=lambda op: cfgs)
    assert res2.table[GPU]["sm_120a"]["moe_gemm"][KEY]["config"] == "a"
    # the JSON round trip that lookup reads
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"_meta": {}, **res.table}))
    rec, src = at.lookup("moe_gemm", KEY, GPU, ARCH, bundled_dir=tmp_path)
    assert src == "bundled" and rec["config"] == "b"


def test_preset_shapes_and_keys():
    shapes = at.preset_shapes("kimi-k2", [1, 64])
    keys = [(op, at.shape_key(**d)) for op, d in shapes]
    assert ("moe_gemm", "M=8,N=4096,K=7168,E=384,act=bf16") in keys
    assert ("moe_gemm", "M=512,N=7168,K=2048,E=384,act=bf16") in keys
    assert ("fused_moe", "T=64,H=7168,I=2048,E=384,k=8,act=bf16") in keys
    assert at.parse_key("M=8,N=4096,act=bf16") == {"M": 8, "N": 4096, "act": "bf16"}


def test_cli_lists_configs_without_gpu(capsys):
    assert at.main(["--list", "--ops", "moe_gemm,fused_moe"]) == 0
    out = capsys.readouterr().out
    assert "moe_gemm" in out and "K2K_MOE_GEMM_KERNEL" in out and "fused_moe" in out
    if not torch.cuda.is_available():
        assert at.main(["--tokens", "1"]) == 2


@pytest.mark.gpu
def test_device_smem_optin_reads_cuda_python(monkeypatch):
    monkeypatch.delenv("K2K_SMEM_LIMIT", raising=False)
    raw = at.device_smem_optin()
    assert raw == torch.cuda.get_device_properties(0).shared_memory_per_block_optin
    monkeypatch.setenv("K2K_SMEM_LIMIT", "101376")
    assert at.device_smem_optin() == min(raw, 101376)


def test_runners_execute_on_cpu():
    """The autotuner's operand builders and op calls run (here through the references), so a typo
    there cannot first show up on the GPU."""
    gemm = dict(M=6, N=128, K=512, E=4, act="bf16")
    for cfg in at.moe_gemm_configs()[:1]:
        out = at.make_runner("moe_gemm", gemm, cfg, device="cpu")()
        assert out.shape == (6, 128) and torch.isfinite(out.float()).all()
    out = at.make_runner("moe_gemm", dict(gemm, act="nvfp4"), at.moe_gemm_configs()[0], device="cpu")()
    assert torch.isfinite(out.float()).all()
    out = at.make_runner("moe_gemm_w4a4_sm120", dict(gemm, act="nvfp4"), at.sm120_configs()[0], device="cpu")()
    assert out.shape == (6, 128)
    fused = dict(T=3, H=512, I=512, E=4, k=2, act="bf16")
    outs = [at.make_runner("fused_moe", fused, c, device="cpu")() for c in at.fused_moe_configs()]
    assert {c.name for c in at.fused_moe_configs()} == {"linear", "tiled"}
    assert torch.equal(outs[0], outs[1])               # same random weights, two layouts: same numbers


def test_dispatch_knobs(monkeypatch, tmp_path):
    """What k2kernels.ops applies around moe_gemm / fused_moe on CUDA: the record's knobs for this GPU
    and shape, nothing for untuned shapes, nothing when the environment already sets a knob; the cache
    follows remember() / clear_memory()."""
    monkeypatch.setattr(at, "BUNDLED_DIR", tmp_path)          # no bundled table: only what we remember
    for v in at.KNOB_VARS:
        monkeypatch.delenv(v, raising=False)
    ident = lambda device: (GPU, ARCH)
    dims = dict(M=8, N=4096, K=7168, E=384, act="bf16")
    assert at.dispatch_knobs("moe_gemm", dims, 0, ident) == {}
    at.remember(_table("persist"))
    assert at.dispatch_knobs("moe_gemm", dims, 0, ident) == {"K2K_MOE_GEMM_KERNEL": "persist"}
    assert at.dispatch_knobs("moe_gemm", dict(dims, M=4096), 0, ident) == {}          # far from M=8
    assert at.dispatch_knobs("moe_gemm", dims, 1, lambda d: ("NVIDIA RTX PRO 6000", "sm_120a")) == {}  # other GPU
    monkeypatch.setenv("K2K_MOE_GEMM_CFG", "m64")                                     # explicit wins
    assert at.dispatch_knobs("moe_gemm", dims, 0, ident) == {}
    monkeypatch.delenv("K2K_MOE_GEMM_CFG")
    at.clear_memory()
    assert at.dispatch_knobs("moe_gemm", dims, 0, ident) == {}


def test_bundled_h200_table_is_well_formed():
    """The committed table: made on an H200 (its _meta), every record's knobs are knobs the launcher
    reads, and every moe_gemm record names a config the tuner enumerates."""
    table = json.loads((at.BUNDLED_DIR / "h200.json").read_text())
    assert table["_meta"]["gpu"] == GPU and table["_meta"]["arch"] == ARCH
    names = {c.name for c in at.moe_gemm_configs()}
    recs = table[GPU][ARCH]
    assert recs["moe_gemm"] and recs["fused_moe"]
    for key, rec in recs["moe_gemm"].items():
        assert rec["config"] in names, (key, rec["config"])
        assert set(rec["knobs"]) <= set(at.KNOB_VARS)
        assert rec["us"] == min(rec["all_us"].values())
