"""python -m k2kernels.autotune --preset kimi-k2 [--tokens 1,8,64] [--out FILE]: time each kernel
family's configs at a model's shapes on this GPU and write the fastest per shape as JSON.

What can be tuned is what the kernels expose (read from their launchers, not guessed):
  moe_gemm             the launcher's heuristic ("auto"), K2K_MOE_GEMM_KERNEL = persist | pipe, the bulk
                       kernel's stages (bulk, K2K_MOE_GEMM_CFG = s2 | s3) and the tile kernel's height
                       (tile, K2K_MOE_GEMM_CFG = m64 | m128), timed on the tiled layout where it applies;
                       csrc/moe_gemm/moe_gemm_ops.cpp reads both on every call; a knob or value its
                       source does not mention is not enumerated.
  moe_gemm_w4a4_sm120  the op's `config` argument (t128x128, t128x128_pingpong, t256x128); SM120 only.
  fused_moe            the expert weight layout (linear | tiled: moe_gemm_prepare, chosen at load time);
                       its gather / SiLU*mul / combine kernels have one config. Timed end to end with
                       the best moe_gemm knobs found for its gate_up shape.
Each config's shared memory is the budget its kernel declares (K2K_SMEM_BUDGET, read from the built
library); configs above this device's opt-in limit (cuda-python cudaDeviceGetAttribute, capped by
$K2K_SMEM_LIMIT like the launchers) are dropped BEFORE timing. Timing: CUDA graph replay of the op,
L2 evicted between replays by reading a 256 MB buffer, median of CUDA-event times.

Output JSON (also the bundled k2kernels/tuned/*.json format):
  {"_meta": {...how it was made...},
   "<GPU name>": {"<arch>": {"<op>": {"<shape key>": {"config": name, "knobs": {...}, "us": t, "all_us": {...}}}}}}
Dispatch-side lookup (`lookup`): in-memory (`remember`, or this process's tuning) -> user file
($K2K_TUNED_CONFIGS) -> bundled k2kernels/tuned/*.json -> heuristic (None: the launcher decides); a
record serves row counts within MAX_ROW_RATIO of its own. k2kernels.ops.moe_gemm / fused_moe apply the
record's knobs on CUDA (`dispatch_knobs`) unless the environment already sets one.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import _paths

BUNDLED_DIR = Path(__file__).resolve().parent / "tuned"
USER_ENV = "K2K_TUNED_CONFIGS"
FORMAT = 1
L2_FLUSH_BYTES = 256 << 20          # > 60 MB H200 L2 (gpu.md): read, never written, between replays


# ---- configs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    op: str
    name: str
    knobs: tuple = ()                # (("ENV_VAR", "value"), ...) set while the op runs (and is captured)
    kwargs: tuple = ()               # (("arg", value), ...) passed to the op
    smem_tags: tuple = ()            # K2K_SMEM_BUDGET tags of the kernels this config can launch
    note: str = ""

    def as_json(self) -> dict:
        return {"config": self.name, "knobs": dict(self.knobs), "kwargs": dict(self.kwargs)}


def _launcher_source(family: str) -> str:
    d = _paths.csrc_dir() / family
    return "\n".join(f.read_text(errors="replace") for f in sorted(d.glob("*.cpp")) if f.is_file())


def _launcher_reads(family: str, text: str) -> bool:
    """Whether a family's launchers mention an env knob / knob value (so a config using it is real)."""
    return text in _launcher_source(family)


_NTS = {"persist": (1, 2, 4), "pipe": (1, 2, 4, 8)}     # streaming kernels: tokens-per-pass configs
_BULK_TOKENS = (4, 8)                                   # bulk-copy decode kernel (K2K_MOE_GEMM_CFG=t4|t8)
_TILE_ROWS = (64, 128)                                  # tile kernel heights (K2K_MOE_GEMM_CFG=m64|m128)
_WGMMA_TOKENS = (64, 96, 128)                           # sm_90a wgmma kernel token tiles (K2K_MOE_GEMM_CFG=w64|w96|w128)


def moe_gemm_configs() -> list[Config]:
    """moe_gemm's tuning knobs, as its launcher (csrc/moe_gemm/moe_gemm_ops.cpp) reads them per call:
    K2K_MOE_GEMM_KERNEL = bulk | persist | pipe | tile | wgmma (unset: its heuristic), with tile
    K2K_MOE_GEMM_CFG = m64 | m128, bulk t4 | t8 and wgmma w64 | w96 | w128. A knob the launcher's source does not mention is not enumerated. The
    tokens per pass (nt) stay the launcher's pick_nt(), which steps down when a config does not fit.
    Timed on the tiled layout where the shape allows it (what KimiMoE and fused_moe use on CUDA)."""
    tile_tags = tuple(f"moe_gemm_tile_m{bm}" for bm in _TILE_ROWS)
    all_tags = tuple(f"moe_gemm_{k}_nt{n}" for k, nts in _NTS.items() for n in nts) + tile_tags
    bulk_tags = tuple(f"moe_gemm_bulk_t{t}" for t in _BULK_TOKENS)
    wgmma_tags = tuple(f"moe_gemm_wgmma_n{t}" for t in _WGMMA_TOKENS)
    out = [Config("moe_gemm", "auto", (), smem_tags=all_tags + bulk_tags + wgmma_tags, note="the launcher's own heuristic")]
    if not _launcher_reads("moe_gemm", "K2K_MOE_GEMM_KERNEL"):
        return out
    if _launcher_reads("moe_gemm", '"bulk"'):
        for t, tag in zip(_BULK_TOKENS, bulk_tags):
            out.append(Config("moe_gemm", f"bulk_t{t}", (("K2K_MOE_GEMM_KERNEL", "bulk"), ("K2K_MOE_GEMM_CFG", f"t{t}")),
                              smem_tags=(tag,), note=f"bulk-copy decode kernel, {t}-token passes (tiled layout, sm_90+)"))
    for kernel, nts in _NTS.items():
        if _launcher_reads("moe_gemm", f'"{kernel}"'):
            out.append(Config("moe_gemm", kernel, (("K2K_MOE_GEMM_KERNEL", kernel),),
                              smem_tags=tuple(f"moe_gemm_{kernel}_nt{nt}" for nt in nts)))
    if _launcher_reads("moe_gemm", '"tile"'):
        for bm, tag in zip(_TILE_ROWS, tile_tags):
            out.append(Config("moe_gemm", f"tile_m{bm}", (("K2K_MOE_GEMM_KERNEL", "tile"), ("K2K_MOE_GEMM_CFG", f"m{bm}")),
                              smem_tags=(tag,), note=f"prefill tile kernel, {bm}-token tiles"))
    if _launcher_reads("moe_gemm", '"wgmma"'):
        for t, tag in zip(_WGMMA_TOKENS, wgmma_tags):
            out.append(Config("moe_gemm", f"wgmma_w{t}", (("K2K_MOE_GEMM_KERNEL", "wgmma"), ("K2K_MOE_GEMM_CFG", f"w{t}")),
                              smem_tags=(tag,), note=f"sm_90a wgmma prefill kernel, {t}-token tiles (tiled layout)"))
    return out


def sm120_configs() -> list[Config]:
    try:
        from .reference.sm120 import CONFIGS
    except ImportError:
        return []
    return [Config("moe_gemm_w4a4_sm120", c, kwargs=(("config", c),), smem_tags=(f"w4a4_sm120_{c}",))
            for c in CONFIGS if c != "auto"]


def fused_moe_configs() -> list[Config]:
    """The stage kernels have one config; what differs per shape is the expert weight layout the
    GEMMs read (chosen at load time: KimiMoE(weight_layout=...)), timed with the tuned moe_gemm knobs."""
    out = [Config("fused_moe", "linear", kwargs=(("scale_layout", "linear"),))]
    try:
        from . import moe_gemm_prepare  # noqa: F401
        out.append(Config("fused_moe", "tiled", kwargs=(("scale_layout", "tiled"),),
                          note="moe_gemm_prepare.prepare_moe_gemm_weights at load"))
    except ImportError:
        pass
    return out


CONFIG_SOURCES: dict[str, Callable[[], list[Config]]] = {
    "moe_gemm": moe_gemm_configs, "moe_gemm_w4a4_sm120": sm120_configs, "fused_moe": fused_moe_configs}


def smem_of(cfg: Config, budgets: dict[str, int]) -> Optional[int]:
    """Bytes the config may need: the smallest declared budget among the kernels it can launch (a
    launcher that steps down to a smaller config needs only that one to fit); None if undeclared."""
    known = [budgets[t] for t in cfg.smem_tags if t in budgets]
    return min(known) if known else None


def filter_by_smem(configs: Iterable[Config], budgets: dict[str, int], limit: int):
    """-> (kept, dropped as [(config, bytes)]): configs whose kernels cannot fit `limit` are dropped."""
    kept, dropped = [], []
    for c in configs:
        b = smem_of(c, budgets)
        if b is not None and b > limit:
            dropped.append((c, b))
        else:
            kept.append(c)
    return kept, dropped


# ---- device facts --------------------------------------------------------------------------------

def device_smem_optin(device: int = 0) -> int:
    """Shared memory per block a kernel may opt in to, read with cuda-python (as the issue asks),
    capped by $K2K_SMEM_LIMIT exactly like csrc/common/smem_limit.h."""
    value = None
    try:
        from cuda.bindings import runtime as cudart
        err, v = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrMaxSharedMemoryPerBlockOptin, device)
        if int(err) == 0:
            value = int(v)
    except ImportError:
        pass
    if value is None:                      # no cuda-python: torch knows the same number
        import torch
        value = int(torch.cuda.get_device_properties(device).shared_memory_per_block_optin)
    cap = int(os.environ.get("K2K_SMEM_LIMIT", "0") or 0)
    return min(value, cap) if 0 < cap < value else value


def declared_budgets() -> dict[str, int]:
    """{tag: bytes} from every loaded family library (K2K_SMEM_BUDGET)."""
    from . import _registry, _resources
    out = {}
    for b in _registry.build_report():
        if b.path is not None:
            out.update(dict(_resources.declared_budgets(b.path, b.family)))
    return out


def gpu_identity(device: int = 0) -> tuple[str, str]:
    import torch
    from ._build import arch_for_capability
    return torch.cuda.get_device_name(device), arch_for_capability(*torch.cuda.get_device_capability(device))


# ---- shapes --------------------------------------------------------------------------------------

def shape_key(**dims) -> str:
    return ",".join(f"{k}={v}" for k, v in dims.items())


def parse_key(key: str) -> dict:
    out = {}
    for part in key.split(","):
        k, v = part.split("=", 1)
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def preset_shapes(preset: str, tokens: Iterable[int], act: str = "bf16") -> list[tuple[str, dict]]:
    from .moe_layer import PRESETS
    c = PRESETS[preset]
    out = []
    for T in tokens:
        M = T * c.top_k
        out.append(("moe_gemm", dict(M=M, N=2 * c.inter, K=c.hidden, E=c.experts, act=act)))     # gate_up
        out.append(("moe_gemm", dict(M=M, N=c.hidden, K=c.inter, E=c.experts, act=act)))         # down
        out.append(("moe_gemm_w4a4_sm120", dict(M=M, N=2 * c.inter, K=c.hidden, E=c.experts, act="nvfp4")))
        out.append(("moe_gemm_w4a4_sm120", dict(M=M, N=c.hidden, K=c.inter, E=c.experts, act="nvfp4")))
        out.append(("fused_moe", dict(T=T, H=c.hidden, I=c.inter, E=c.experts, k=c.top_k, act=act)))
    return out


# ---- lookup: in-memory -> user file -> bundled -> heuristic ---------------------------------------

_MEMORY: dict = {}
_DISPATCH: dict = {}          # dispatch_knobs cache: (device, op, shape key, user file) -> knobs


# A record serves row / token counts within this factor of its own; farther away the kernels' regimes
# differ (H200: the tile kernel tuned at T=4096 would be 1.4x slower than the default at T=1024).
MAX_ROW_RATIO = 1.5


def _get(table: dict, gpu: str, arch: str, op: str, key: str):
    entries = table.get(gpu, {}).get(arch, {}).get(op, {})
    if key in entries:
        return entries[key]
    # nearest tuned token count for the same other dims (log distance, within MAX_ROW_RATIO)
    want = parse_key(key)
    rows = "M" if "M" in want else "T" if "T" in want else None
    best, best_d = None, None
    for k2, rec in entries.items():
        have = parse_key(k2)
        if rows is None or {k: v for k, v in have.items() if k != rows} != {k: v for k, v in want.items() if k != rows}:
            continue
        d = abs(math.log(max(have[rows], 1)) - math.log(max(want[rows], 1)))
        if d <= math.log(MAX_ROW_RATIO) + 1e-9 and (best_d is None or d < best_d):
            best, best_d = rec, d
    return best


def merge(dst: dict, src: dict) -> dict:
    for gpu, archs in src.items():
        if gpu.startswith("_"):
            continue
        for arch, ops in archs.items():
            for op, entries in ops.items():
                dst.setdefault(gpu, {}).setdefault(arch, {}).setdefault(op, {}).update(entries)
    return dst


def remember(table: dict) -> None:
    """Put a tuned table in this process's in-memory layer (highest priority)."""
    merge(_MEMORY, table)
    _DISPATCH.clear()


def clear_memory() -> None:
    _MEMORY.clear()
    _DISPATCH.clear()


def _load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        import warnings
        warnings.warn(f"k2kernels.autotune: cannot read tuned configs {path}: {e}", RuntimeWarning)
        return {}


def layers(bundled_dir: Optional[Path] = None) -> list[tuple[str, dict]]:
    """[(source name, table)] in lookup order."""
    out = [("memory", _MEMORY)]
    user = os.environ.get(USER_ENV)
    if user:
        out.append((f"user:{user}", _load(Path(user))))
    bundled: dict = {}
    for f in sorted(Path(bundled_dir or BUNDLED_DIR).glob("*.json")):
        merge(bundled, _load(f))
    out.append(("bundled", bundled))
    return out


def lookup(op: str, key: str, gpu: str, arch: str, bundled_dir: Optional[Path] = None):
    """-> (record or None, source): the first layer holding (gpu, arch, op, shape) wins; the
    heuristic (None) means: let the launcher pick (moe_gemm's pick_nt, sm120's 'auto')."""
    for source, table in layers(bundled_dir):
        rec = _get(table, gpu, arch, op, key)
        if rec is not None:
            return rec, source
    return None, "heuristic"


KNOB_VARS = ("K2K_MOE_GEMM_KERNEL", "K2K_MOE_GEMM_CFG")


def dispatch_knobs(op: str, dims: dict, device: int, identity: Optional[Callable[[int], tuple]] = None) -> dict:
    """The env knobs the tuned tables give this call ({} = the launcher's heuristic): what
    k2kernels.ops applies around moe_gemm / fused_moe on CUDA. Layers as `lookup`; a knob already set
    in the environment wins over every table (an explicit choice is never overridden). Cached per
    (device, op, shape, $K2K_TUNED_CONFIGS); `remember` and `clear_memory` reset the cache."""
    if any(v in os.environ for v in KNOB_VARS):
        return {}
    ck = (device, op, tuple(dims.items()), os.environ.get(USER_ENV))   # no string building per call
    hit = _DISPATCH.get(ck)
    if hit is None:
        gpu, arch = (identity or gpu_identity)(device)
        rec, _ = lookup(op, shape_key(**dims), gpu, arch)
        hit = {k: str(v) for k, v in (rec or {}).get("knobs", {}).items()}
        _DISPATCH[ck] = hit
    return hit


@contextlib.contextmanager
def knobs(record: Optional[dict], clear: Iterable[str] = ()):
    """Set a tuned record's env knobs for the duration (moe_gemm's launcher reads them per call, so
    also at CUDA-graph capture); variables in `clear` are unset unless the record sets them.
    Process-wide: engines apply it around capture or at start-up."""
    env = (record or {}).get("knobs", {})
    old = {k: os.environ.get(k) for k in set(env) | set(clear)}
    for k in clear:
        os.environ.pop(k, None)
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- timing --------------------------------------------------------------------------------------

def time_cuda(fn: Callable[[], object], iters: int = 20, warmup: int = 3, graph: bool = True, flush=None) -> float:
    """Median seconds of fn: captured in a CUDA graph and replayed (graph=True), or eager; before each
    timed run L2 is evicted by READING `flush` (writing would leave dirty lines that slow the next read)."""
    import torch
    if flush is None:
        flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda").fill_(1.0)
    for _ in range(warmup):
        fn()
    run = fn
    if graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        run = g.replay
        run()
    times = []
    for _ in range(iters):
        flush.sum()                   # read the flush buffer: evicts L2 (torch 2.11 has no out= full sum)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(times)


def random_moe_operands(E: int, N: int, K: int, M: int, device="cuda", seed: int = 0):
    """NVFP4 weights with random codes/scales (no dense weights: 384 Kimi experts would be 45 GB in
    fp32) and M routed rows spread over the experts like a uniform top-k router."""
    import torch
    g = torch.Generator(device=device).manual_seed(seed)
    w = torch.randint(0, 256, (E, N, K // 2), dtype=torch.uint8, device=device, generator=g)
    s = (torch.rand(E, N, K // 16, device=device, generator=g) * 1.5 + 0.25).to(torch.float8_e4m3fn)
    alpha = torch.full((E,), K ** -0.5 / 2.93, device=device)      # 2.93 = rms of a random e2m1 code
    a = (torch.randn(M, K, device=device, generator=g) * 0.5).to(torch.bfloat16)
    ids = torch.randint(0, E, (M,), device=device, generator=g)
    counts = torch.bincount(ids, minlength=E)
    off = torch.zeros(E + 1, dtype=torch.int32, device=device)
    off[1:] = torch.cumsum(counts, 0)
    return a, w, s, alpha, off


def make_runner(op: str, dims: dict, cfg: Config, device="cuda"):
    """A zero-argument callable running op at dims under cfg (operands built once)."""
    import torch
    if op in ("moe_gemm", "moe_gemm_w4a4_sm120"):
        a, w, s, alpha, off = random_moe_operands(dims["E"], dims["N"], dims["K"], dims["M"], device)
        if op == "moe_gemm":
            a_scale = torch.full((dims["E"],), 0.02, device=device) if dims["act"] == "nvfp4" else None
            layout = "linear"
            if dims["N"] % 64 == 0 and dims["K"] % 512 == 0:   # the layout engines run (prepared once)
                from .moe_gemm_prepare import prepare_moe_gemm_weights
                w, s = prepare_moe_gemm_weights(w, s)
                layout = "tiled"
            return lambda: torch.ops.k2kernels.moe_gemm(a, w, s, alpha, off, dims["act"], a_scale, layout)
        from . import nvfp4
        s_swz = nvfp4.swizzle_scales(s)          # the kernel-native layout, prepared once
        a_scale = torch.full((dims["E"],), 0.02, device=device)
        kw = dict(cfg.kwargs)
        return lambda: torch.ops.k2kernels.moe_gemm_w4a4_sm120(a, w, s_swz, alpha, off, a_scale, kw.get("config", "auto"))
    if op == "fused_moe":
        from .fused_moe import KimiMoE  # noqa: F401 (module import registers nothing; op via ops)
        from .ops import fused_moe
        from .reference.fused_moe import workspace_bytes
        T, H, I, E, k = dims["T"], dims["H"], dims["I"], dims["E"], dims["k"]
        _, w13, s13, a13, _ = random_moe_operands(E, 2 * I, H, 1, device, seed=1)
        _, w2, s2, a2, _ = random_moe_operands(E, H, I, 1, device, seed=2)
        layout = dict(cfg.kwargs).get("scale_layout", "linear")
        if layout == "tiled":
            from .moe_gemm_prepare import prepare_moe_gemm_weights
            (w13, s13), (w2, s2) = prepare_moe_gemm_weights(w13, s13), prepare_moe_gemm_weights(w2, s2)
        g = torch.Generator(device=device).manual_seed(3)
        x = torch.randn(T, H, device=device, generator=g).to(torch.bfloat16)
        logits = torch.randn(T, E, device=device, generator=g)
        bias = torch.randn(E, device=device, generator=g) * 0.01
        ws = torch.empty(workspace_bytes(T, H, I, k), dtype=torch.uint8, device=device)
        return lambda: fused_moe(x, logits, w13, s13, a13, w2, s2, a2, k, e_bias=bias, routed_scaling_factor=2.827,
                                 scale_layout=layout, workspace=ws)
    raise ValueError(f"k2kernels.autotune: no runner for op {op!r}")


# ---- tuning --------------------------------------------------------------------------------------

@dataclass
class TuneResult:
    table: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)      # (op, key, config name, smem bytes, limit)
    skipped: list = field(default_factory=list)      # (op, key, reason)


def tune(shapes, gpu: str, arch: str, smem_limit: int, budgets: dict[str, int],
         timer: Callable[[str, dict, Config], float], progress: bool = True,
         configs_for: Optional[Callable[[str], list[Config]]] = None,
         supported: Optional[Callable[[str], Optional[str]]] = None) -> TuneResult:
    """Time every (shape, config) with `timer(op, dims, config) -> seconds` (the CUDA timer, or a fake in
    tests) after dropping configs over smem_limit; keep the fastest per shape."""
    configs_for = configs_for or (lambda op: CONFIG_SOURCES[op]())
    res = TuneResult()
    work = []
    for op, dims in shapes:
        key = shape_key(**dims)
        why = supported(op) if supported else None
        if why:
            res.skipped.append((op, key, why))
            continue
        kept, dropped = filter_by_smem(configs_for(op), budgets, smem_limit)
        res.dropped += [(op, key, c.name, b, smem_limit) for c, b in dropped]
        if not kept:
            res.skipped.append((op, key, f"no config fits {smem_limit} B of shared memory"))
        work += [(op, dims, key, c) for c in kept]
    bar = _progress(work, progress)
    for op, dims, key, cfg in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{op} {key} {cfg.name}"[:60])
        try:
            t = timer(op, dims, cfg)
        except Exception as e:  # noqa: BLE001 - a config that fails to run is reported, not fatal
            res.skipped.append((op, key, f"{cfg.name}: {type(e).__name__}: {str(e)[:200]}"))
            continue
        entry = res.table.setdefault(gpu, {}).setdefault(arch, {}).setdefault(op, {}).setdefault(
            key, {"config": None, "knobs": {}, "kwargs": {}, "us": None, "all_us": {}})
        entry["all_us"][cfg.name] = round(t * 1e6, 2)
        if entry["us"] is None or t * 1e6 < entry["us"]:
            entry.update(cfg.as_json())
            entry["us"] = round(t * 1e6, 2)
    return res


def _progress(items, enabled):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
        return tqdm(items, desc="autotune", unit="cfg")
    except ImportError:                       # tqdm is optional: a plain counter instead
        def gen():
            for i, it in enumerate(items):
                print(f"autotune [{i + 1}/{len(items)}] {it[0]} {it[2]} {it[3].name}", file=sys.stderr, flush=True)
                yield it
        return gen()


def cuda_timer(iters: int = 20):
    import torch
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda").fill_(1.0)
    tuned: dict = {}
    runners: dict = {}            # operands of the current shape, shared by its configs (env knobs are
                                  # read at call/capture time, so one runner serves every knob setting)

    def runner(op, dims, cfg):
        key = (op, shape_key(**dims), cfg.kwargs)
        if key not in runners:
            runners.clear()       # one shape's operands at a time (Kimi gate_up weights: 6.4 GB)
            runners[key] = make_runner(op, dims, cfg)
        return runners[key]

    def timer(op: str, dims: dict, cfg: Config) -> float:
        if op == "fused_moe":                 # with the best moe_gemm knobs found for its GEMM shapes
            rec = tuned.get(shape_key(M=dims["T"] * dims["k"], N=2 * dims["I"], K=dims["H"], E=dims["E"], act=dims["act"]))
        else:
            rec = None
        with knobs(rec, clear=KNOB_VARS), knobs(cfg.as_json(), clear=KNOB_VARS if op == "moe_gemm" else ()):
            fn = runner(op, dims, cfg)
            graph = dims.get("M", dims.get("T", 0) * 8) <= 512
            t = time_cuda(fn, iters=iters, graph=graph, flush=flush)
        return t
    timer.tuned = tuned
    return timer


def _supported_here(arch: str):
    def check(op: str) -> Optional[str]:
        if op == "moe_gemm_w4a4_sm120" and not arch.startswith("sm_12"):
            return f"needs sm_120a/sm_121a; this GPU is {arch}"
        return None
    return check


def main(argv=None) -> int:
    from .moe_layer import PRESETS
    p = argparse.ArgumentParser(prog="python -m k2kernels.autotune", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="kimi-k2")
    p.add_argument("--tokens", default="1,8,64,512,4096", help="comma-separated token counts T (rows = T * top_k)")
    p.add_argument("--ops", default="moe_gemm,moe_gemm_w4a4_sm120,fused_moe")
    p.add_argument("--act", default="bf16", choices=("bf16", "nvfp4"))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    p.add_argument("--list", action="store_true", help="list configs and their SMEM budgets, time nothing")
    args = p.parse_args(argv)
    tokens = [int(t) for t in args.tokens.split(",") if t]
    ops = set(args.ops.split(","))
    shapes = [(op, d) for op, d in preset_shapes(args.preset, tokens, args.act) if op in ops]

    import torch
    if args.list or not torch.cuda.is_available():
        for op in sorted(ops):
            for c in CONFIG_SOURCES[op]():
                print(f"{op:22s} {c.name:20s} knobs={dict(c.knobs)} kwargs={dict(c.kwargs)} smem_tags={list(c.smem_tags)} {c.note}")
        if not torch.cuda.is_available() and not args.list:
            print("k2kernels.autotune: timing needs a CUDA GPU (listed the configs only)", file=sys.stderr)
            return 2
        return 0
    from . import load_kernels
    load_kernels()
    gpu, arch = gpu_identity()
    limit = device_smem_optin()
    budgets = declared_budgets()
    print(f"GPU {gpu} ({arch}); shared memory opt-in {limit} B; {len(budgets)} declared kernel budgets")
    timer = cuda_timer(args.iters)
    # moe_gemm first, so fused_moe runs with the tuned GEMM knobs
    order = {"moe_gemm": 0, "moe_gemm_w4a4_sm120": 1, "fused_moe": 2}
    shapes.sort(key=lambda s: order.get(s[0], 9))
    res = TuneResult()
    for op in sorted(ops, key=lambda o: order.get(o, 9)):
        r = tune([s for s in shapes if s[0] == op], gpu, arch, limit, budgets, timer, supported=_supported_here(arch))
        merge(res.table, r.table)
        res.dropped += r.dropped
        res.skipped += r.skipped
        if op == "moe_gemm":
            timer.tuned.update(r.table.get(gpu, {}).get(arch, {}).get("moe_gemm", {}))
    for op, key, name, b, lim in res.dropped:
        print(f"dropped {op} {key} {name}: needs {b} B > {lim} B")
    for op, key, why in res.skipped:
        print(f"skipped {op} {key}: {why}")
    print(f"\n{'op':22s} {'shape':44s} {'best':16s} {'us':>9s}  all (us)")
    for op, entries in res.table.get(gpu, {}).get(arch, {}).items():
        for key, rec in entries.items():
            print(f"{op:22s} {key:44s} {rec['config']:16s} {rec['us']:9.1f}  {rec['all_us']}")
    remember(res.table)
    if args.out:
        doc = {"_meta": {"format": FORMAT, "date": datetime.date.today().isoformat(), "command": "python -m k2kernels.autotune "
                         + " ".join(argv if argv is not None else sys.argv[1:]), "gpu": gpu, "arch": arch,
                         "smem_limit": limit, "torch": torch.__version__, "timing": "CUDA graph replay (M <= 512 rows) or "
                         "eager, L2 evicted by reading 256 MB, median of CUDA events"}}
        doc.update(res.table)
        Path(args.out).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
