"""k2kernels.parallel: TP/EP sharding of NVFP4 expert weights and the TP/EP MoE forwards.

- Sharding helpers are checked EXACTLY: shards concatenate back to the original bytes, and the
  swizzled-scale shards equal swizzle_scales(<linear shard>) on both the direct tile-cut path and the
  re-swizzle path.
- The forwards run in 2 and 4 processes over gloo on CPU (torch.multiprocessing, a free port, a
  join deadline so a hang fails instead of blocking CI) and are compared with the single-process
  k2kernels.moe_layer.moe_forward on the same weights and tokens. Receive buffers are poisoned
  (NaN) so an unwritten row cannot pass. A deliberately inconsistent TP shard must fail the same
  check (the comparison can fail).
- The multi-GPU (NCCL) variant is marked gpu and needs >= 2 GPUs; it has not been run (no
  multi-GPU machine in this session).
"""
from __future__ import annotations

import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from k2kernels import nvfp4
from k2kernels import parallel as par
from k2kernels.moe_layer import MoEConfig, MoELayer, moe_forward

from tolerances import PARALLEL_EP_REL_FRO, PARALLEL_TP_ATOL_REL, PARALLEL_TP_REL_FRO

# Tiny, same structure as Kimi-K2 (sigmoid + bias routing, [gate; up] rows). I = 64 allows TP = 4
# (16-element down-projection slices); E = 10 gives an uneven EP split at world 4 (3, 3, 2, 2).
CFG = MoEConfig(hidden=64, inter=64, experts=10, top_k=3)
TP_TOKENS = 7
EP_TOKENS = {2: (6, 4), 4: (5, 0, 3, 7)}         # tokens per rank; a rank with none must work
JOIN_TIMEOUT_S = 300                             # generous for 2-core CI; a hang fails the test


@pytest.fixture(scope="module")
def layer():
    return MoELayer.random(CFG, seed=3)


def _rel_fro(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def _assert_tp_close(out, ref):
    err = _rel_fro(out, ref)
    assert err <= PARALLEL_TP_REL_FRO, f"relative Frobenius error {err:.3e} > {PARALLEL_TP_REL_FRO}"
    bound = PARALLEL_TP_ATOL_REL * ref.float().abs().max() + 2 ** -7 * ref.float().abs()
    bad = (out.float() - ref.float()).abs() > bound
    assert not bad.any(), (f"{int(bad.sum())} elements outside the elementwise bound; "
                           f"first at {bad.nonzero()[0].tolist()}")


# ---- the local computation (the fused_moe swap point) --------------------------------------------

def test_local_experts_reproduces_moe_forward_bitwise(layer):
    x = torch.randn(9, CFG.hidden).to(torch.bfloat16)
    w, ids = par.route(layer, x)
    out = par.local_experts(layer.weights, x, w, ids)
    assert torch.equal(out.view(torch.int16), moe_forward(layer, x).view(torch.int16))


def test_local_experts_expert_map_drops_foreign_pairs(layer, monkeypatch):
    """Foreign pairs add nothing, even when the GEMM leaves their rows (past offsets[E]) as NaN,
    which the CUDA kernel may (it never writes them)."""
    ops_mod = torch.ops.k2kernels

    class PoisonedOps:             # passed as experts_forward's `impl` (torch.ops.k2kernels signatures)
        moe_align = staticmethod(ops_mod.moe_align)

        @staticmethod
        def moe_gemm(a, w, s, alpha, offsets, *args):
            out = ops_mod.moe_gemm(a, w, s, alpha, offsets, *args).clone()
            out[int(offsets[-1]):] = float("nan")
            return out

    poisoned = PoisonedOps()
    x = torch.randn(6, CFG.hidden).to(torch.bfloat16)
    w, ids = par.route(layer, x)
    owner = par.ep_owner(CFG.experts, 2)
    parts = []
    for r in range(2):
        local, emap = par.shard_ep(layer.weights, owner, r)
        parts.append(par.local_experts(local, x, w, ids, emap, impl=poisoned).float())
        # the pairs of this rank only: weights of foreign pairs zeroed, full weights
        w_r = torch.where(owner[ids.long()] == r, w, torch.zeros_like(w))
        ref_r = par.local_experts(layer.weights, x, w_r, ids).float()
        assert torch.equal(parts[-1], ref_r)
    assert (parts[0] != 0).any() and (parts[1] != 0).any()


# ---- TP sharding: exact --------------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 4])
def test_tp_shards_concatenate_to_original_bytes(layer, world):
    w = layer.weights
    shards = [par.shard_tp(w, r, world) for r in range(world)]
    I = CFG.inter
    n = I // world
    gate = torch.cat([s.w13[:, :n] for s in shards], 1)
    up = torch.cat([s.w13[:, n:] for s in shards], 1)
    assert torch.equal(torch.cat([gate, up], 1), w.w13)
    gs = torch.cat([s.w13_scale[:, :n] for s in shards], 1)
    us = torch.cat([s.w13_scale[:, n:] for s in shards], 1)
    assert torch.equal(torch.cat([gs, us], 1).view(torch.uint8), w.w13_scale.view(torch.uint8))
    assert torch.equal(torch.cat([s.w2 for s in shards], 2), w.w2)
    assert torch.equal(torch.cat([s.w2_scale for s in shards], 2).view(torch.uint8), w.w2_scale.view(torch.uint8))
    for s in shards:
        s.validate()
        assert s.w13.shape[1] == 2 * n and s.w2.shape[2] == n // 2
        for name in ("w13_alpha", "w13_input_scale", "w2_alpha", "w2_input_scale"):
            assert torch.equal(getattr(s, name), getattr(w, name))


def _random_nvfp4(E, N, K, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 256, (E, N, K // 2), generator=g, dtype=torch.uint8)
    s = torch.randint(1, 0x7F, (E, N, K // 16), generator=g, dtype=torch.uint8).view(torch.float8_e4m3fn)
    return w, s


# (inter I, hidden H, world, whether every cut falls on a swizzle tile edge)
SWIZZLE_CASES = [
    (256, 128, 2, True),      # I/W = 128 rows (one tile row), down K slice 8 scale columns (2 tiles)
    (512, 64, 4, True),
    (256, 64, 4, False),      # I/W = 64 rows: half tiles -> re-swizzle; K slice 4 columns is aligned
    (96, 64, 2, False),       # 48 rows, 3 scale columns: neither aligned
    (96, 64, 3, False),       # 32 rows, 2 scale columns
    (160, 64, 2, False),      # I % 128 != 0: `up` starts inside a tile; last K tile padded
]


@pytest.mark.parametrize("I,H,world,aligned", SWIZZLE_CASES)
def test_tp_swizzled_scale_shards(monkeypatch, I, H, world, aligned):
    E = 2
    w13, s13 = _random_nvfp4(E, 2 * I, H, seed=I + world)
    w2, s2 = _random_nvfp4(E, H, I, seed=I * 7 + world)
    sw13, sw2 = nvfp4.swizzle_scales(s13), nvfp4.swizzle_scales(s2)
    if aligned:   # the direct tile cut must be taken: forbid the unswizzle fallback
        def no_fallback(*a, **k):
            raise AssertionError("aligned shard went through unswizzle/re-swizzle")
        monkeypatch.setattr(nvfp4, "unswizzle_scales", no_fallback)
    got13, got2 = [], []
    for r in range(world):
        lw13, ls13 = par.shard_gate_up(w13, s13, r, world)
        lw2, ls2 = par.shard_down(w2, s2, r, world)
        zw13, zs13 = par.shard_gate_up(w13, sw13, r, world, scale_layout="swizzled")
        zw2, zs2 = par.shard_down(w2, sw2, r, world, scale_layout="swizzled")
        assert torch.equal(zw13, lw13) and torch.equal(zw2, lw2)
        assert zs13.shape == (E, *nvfp4.swizzled_scale_shape(2 * I // world, H // 16))
        assert zs2.shape == (E, *nvfp4.swizzled_scale_shape(H, I // world // 16))
        assert torch.equal(zs13.view(torch.uint8), nvfp4.swizzle_scales(ls13).view(torch.uint8))
        assert torch.equal(zs2.view(torch.uint8), nvfp4.swizzle_scales(ls2).view(torch.uint8))
        got13.append(zs13)
        got2.append(zs2)
    if aligned:   # whole tiles: concatenating the shards' tiles gives back the original bytes
        n = I // world
        tiles = [par.sharding._tiles(z) for z in got13]
        half = n // 128
        gate = torch.cat([t[:, :half] for t in tiles], 1)
        up = torch.cat([t[:, half:] for t in tiles], 1)
        assert torch.equal(torch.cat([gate, up], 1).reshape(sw13.shape), sw13.view(torch.uint8))
        down = torch.cat([par.sharding._tiles(z) for z in got2], 2)
        assert torch.equal(down.reshape(sw2.shape), sw2.view(torch.uint8))


@pytest.mark.parametrize("I,H,world", [(1024, 512, 2), (2048, 512, 4), (512, 1024, 1)])
def test_tp_tiled_shards_equal_prepared_linear_shards(I, H, world):
    """moe_gemm's tiled layout (codes and scales): block-wise shards == prepare(<linear shard>)."""
    from k2kernels.moe_gemm_prepare import prepare_moe_gemm_weights
    w13, s13 = _random_nvfp4(1, 2 * I, H, seed=I + H)
    w2, s2 = _random_nvfp4(1, H, I, seed=I * 3 + H)
    t13, ts13 = prepare_moe_gemm_weights(w13, s13)
    t2, ts2 = prepare_moe_gemm_weights(w2, s2)
    for r in range(world):
        for (w, sc), (tw, ts), shard in (((w13, s13), (t13, ts13), par.shard_gate_up),
                                         ((w2, s2), (t2, ts2), par.shard_down)):
            want_w, want_s = prepare_moe_gemm_weights(*shard(w, sc, r, world))
            got_w, got_s = shard(tw, ts, r, world, scale_layout="tiled")
            assert torch.equal(got_w, want_w)
            assert torch.equal(got_s.view(torch.uint8), want_s.view(torch.uint8))
    w2s, s2s = _random_nvfp4(1, 64, 1024, seed=1)
    with pytest.raises(ValueError, match="multiple of 512"):          # I/W = 256: not a tiled K step
        par.shard_down(*prepare_moe_gemm_weights(w2s, s2s), 0, 4, scale_layout="tiled")
    w13s, s13s = _random_nvfp4(1, 2 * 96, 512, seed=2)
    with pytest.raises(ValueError, match="multiples of 64"):            # I = 96: up starts mid-tile
        par.shard_gate_up(w13s, s13s, 0, 2, scale_layout="tiled")


def test_tp_sharding_errors(layer):
    with pytest.raises(ValueError, match="divisible by 16 \\* world"):
        par.shard_tp(layer.weights, 0, 3)                    # 64 / 3
    with pytest.raises(ValueError, match="rank must be in"):
        par.shard_tp(layer.weights, 2, 2)
    w13, s13 = _random_nvfp4(2, 256, 32, 0)     # H/16 = 2: linear and swizzled shapes differ
    with pytest.raises(ValueError, match="w13_scale \\(swizzled\\)|scale \\(swizzled\\)"):
        par.shard_gate_up(w13, s13, 0, 2, scale_layout="swizzled")      # linear scales given
    with pytest.raises(ValueError, match="w13_scale \\(linear\\)"):
        par.shard_gate_up(w13, nvfp4.swizzle_scales(s13), 0, 2)
    with pytest.raises(ValueError, match="scale_layout"):
        par.shard_down(w13, s13, 0, 2, scale_layout="tiled")
    with pytest.raises(ValueError, match="w13 must be uint8"):
        par.shard_gate_up(w13.float(), s13, 0, 2)


def test_tp_partials_sum_to_moe_forward_and_a_bad_shard_fails(layer):
    """In-process TP (no collective): sum of the ranks' partials vs moe_forward. The same check on
    a shard whose gate and up halves come from different slices must fail: the test can fail."""
    world = 4
    x = torch.randn(TP_TOKENS, CFG.hidden).to(torch.bfloat16)
    ref = moe_forward(layer, x)
    w, ids = par.route(layer, x)
    shards = [par.shard_tp_layer(layer, r, world) for r in range(world)]
    total = sum(par.local_experts(s.weights, x, w, ids).float() for s in shards)
    _assert_tp_close(total.to(torch.bfloat16), ref)
    n = CFG.inter // world
    bad_total = 0
    for r, s in enumerate(shards):
        nxt = shards[(r + 1) % world].weights
        bw = par.shard_tp(layer.weights, r, world)
        bw.w13 = torch.cat([s.weights.w13[:, :n], nxt.w13[:, n:]], 1)            # gate_r with up_{r+1}
        bw.w13_scale = torch.cat([s.weights.w13_scale[:, :n], nxt.w13_scale[:, n:]], 1)
        bad_total = bad_total + par.local_experts(bw, x, w, ids).float()
    with pytest.raises(AssertionError):
        _assert_tp_close(bad_total.to(torch.bfloat16), ref)


# ---- EP sharding ---------------------------------------------------------------------------------

def test_ep_owner_and_expert_map():
    assert par.ep_owner(10, 4).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert par.ep_owner(384, 4).bincount().tolist() == [96] * 4
    owner = torch.tensor([1, 0, 1, 1, 0], dtype=torch.int32)
    assert par.expert_map(owner, 0).tolist() == [-1, 0, -1, -1, 1]
    assert par.expert_map(owner, 1).tolist() == [0, -1, 1, 2, -1]
    with pytest.raises(ValueError, match="world <= num_experts"):
        par.ep_owner(3, 4)
    with pytest.raises(ValueError, match="owner must be int32"):
        par.expert_map(owner.long(), 0)


def test_ep_shards_partition_the_experts(layer):
    w = layer.weights
    for owner in (par.ep_owner(CFG.experts, 4), torch.tensor([3, 1, 0, 2, 1, 0, 3, 2, 2, 0], dtype=torch.int32)):
        seen = torch.zeros(CFG.experts, dtype=torch.int64)
        for r in range(4):
            local, emap = par.shard_ep(w, owner, r)
            local.validate()
            glob = torch.nonzero(owner == r).flatten()
            assert emap[glob].tolist() == list(range(glob.numel()))
            assert (emap[owner != r] == -1).all()
            for name, t in local.__dict__.items():
                assert torch.equal(t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t,
                                   (getattr(w, name)[glob].view(torch.uint8) if t.dtype == torch.float8_e4m3fn
                                    else getattr(w, name)[glob])), name
            seen[glob] += 1
        assert (seen == 1).all()
    with pytest.raises(ValueError, match="owns no expert"):
        par.shard_ep(w, torch.zeros(CFG.experts, dtype=torch.int32), 1)
    with pytest.raises(ValueError, match="one entry per expert"):
        par.shard_ep(w, torch.zeros(3, dtype=torch.int32), 0)


def test_forward_input_errors(layer, tmp_path):
    with pytest.raises(ValueError, match="owner values must be ranks in \\[0, 2\\)"):
        par.EPLayer.from_layer(layer, 0, 2, owner=torch.arange(CFG.experts, dtype=torch.int32) % 3)
    ep = par.EPLayer.from_layer(layer, 0, 2)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:     # a world-1 group: the checks run before any collective
        with pytest.raises(ValueError, match="sharded for world = 2"):
            par.ep_moe_forward(ep, torch.randn(3, CFG.hidden).bfloat16())
        ep1 = par.EPLayer.from_layer(layer, 0, 1)
        with pytest.raises(ValueError, match="x must be bfloat16"):
            par.ep_moe_forward(ep1, torch.randn(3, CFG.hidden))
        with pytest.raises(ValueError, match="mode must be one of"):
            par.ep_moe_forward(ep1, torch.randn(3, CFG.hidden).bfloat16(), mode="fixed")
        with pytest.raises(ValueError, match="capacity must be >= T \\* top_k = 9"):
            par.ep_moe_forward(ep1, torch.randn(3, CFG.hidden).bfloat16(), mode="padded", capacity=8)
        # world 1: EP is the single-process layer, bit for bit
        x = torch.randn(4, CFG.hidden).bfloat16()
        assert torch.equal(par.ep_moe_forward(ep1, x), moe_forward(layer, x))
        assert torch.equal(par.tp_moe_forward(par.shard_tp_layer(layer, 0, 1), x), moe_forward(layer, x))
    finally:
        dist.destroy_process_group()
    shard = par.shard_tp_layer(layer, 0, 2)
    with pytest.raises(ValueError, match="x must be bfloat16"):
        par.tp_moe_forward(shard, torch.randn(3, CFG.hidden))
    with pytest.raises(ValueError, match="reduce_dtype"):
        par.tp_moe_forward(shard, torch.randn(3, CFG.hidden).bfloat16(), reduce_dtype=torch.float16)


# ---- multi-process (gloo on CPU) -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world, *args, backend="gloo"):
    """Run fn(rank, world, port, backend, *args) in `world` processes; fail (not block) on a hang."""
    ctx = mp.start_processes(fn, args=(world, _free_port(), backend, *args), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{world}-process run did not finish within {JOIN_TIMEOUT_S} s (hang?)")


def _poisoned_alloc(shape, dtype, device):
    t = torch.empty(shape, dtype=dtype, device=device)
    if dtype.is_floating_point:
        return t.fill_(float("nan"))
    return t.fill_(-1)


def _worker(rank, world, port, backend, layer, x_tp, x_ep, out_dir, compile_check):
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        from k2kernels.parallel import ep as ep_mod
        ep_mod._alloc = _poisoned_alloc
        layer = MoELayer(layer.cfg, layer.gate.to(device), layer.bias.to(device), layer.weights.to(device))
        res = {}
        shard = par.shard_tp_layer(layer, rank, world)
        xt = x_tp.to(device)
        res["tp_bf16"] = par.tp_moe_forward(shard, xt)
        res["tp_fp32"] = par.tp_moe_forward(shard, xt, reduce_dtype=torch.float32)
        xe = x_ep[rank].to(device)
        cap = max(x.shape[0] for x in x_ep) * layer.cfg.top_k
        placements = {"default": None,
                      "scattered": torch.tensor([(3 * e + 1) % world for e in range(layer.cfg.experts)],
                                                dtype=torch.int32)}
        for name, owner in placements.items():
            ep = par.EPLayer.from_layer(layer, rank, world, None if owner is None else owner.to(device))
            stats = {}
            res[f"ep_exact_{name}"] = par.ep_moe_forward(ep, xe, stats=stats)
            res[f"ep_padded_{name}"] = par.ep_moe_forward(ep, xe, mode="padded", capacity=cap)
            res[f"stats_{name}"] = stats
            dstats = {}
            res[f"ep_dedup_exact_{name}"] = par.ep_moe_forward(ep, xe, dedup=True, stats=dstats)
            res[f"ep_dedup_padded_{name}"] = par.ep_moe_forward(ep, xe, mode="padded", dedup=True,
                                                                 capacity=cap // layer.cfg.top_k)
            res[f"dstats_{name}"] = dstats
            # the rows a deduplicating dispatch must send: distinct owners of each token's slots
            own = ep.owner[par.route(ep, xe)[1].long()]
            res[f"distinct_{name}"] = sum(len(set(r)) for r in own.tolist())
        if compile_check:
            # fullgraph: no graph break, no host sync in TP and in EP 'padded' (aot_eager: the CI has
            # no time for inductor's C++ builds; inductor was checked by hand, bit-equal too)
            tp_c = torch.compile(par.tp_moe_forward, fullgraph=True, backend="aot_eager")
            res["tp_compiled"] = tp_c(shard, xt)
            ep_c = torch.compile(par.ep_moe_forward, fullgraph=True, backend="aot_eager")
            res["ep_padded_compiled"] = ep_c(ep, xe, mode="padded", capacity=cap)
        if backend == "nccl":
            # CUDA graph capture/replay == eager: TP and EP 'padded' have no host sync
            for key, fn in (("tp_graph", lambda: par.tp_moe_forward(shard, xt)),
                            ("ep_graph", lambda: par.ep_moe_forward(ep, xe, mode="padded", capacity=cap))):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    fn()                                      # warm up (NCCL communicator, allocator)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = fn()
                graph.replay()
                torch.cuda.synchronize()
                res[key] = out.clone()
        torch.save({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in res.items()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _check_distributed(tmp_path, layer, world, backend="gloo", compile_check=False):
    g = torch.Generator().manual_seed(world)
    x_tp = torch.randn(TP_TOKENS, CFG.hidden, generator=g).to(torch.bfloat16)
    x_ep = [torch.randn(t, CFG.hidden, generator=g).to(torch.bfloat16) for t in EP_TOKENS[world]]
    _spawn(_worker, world, layer, x_tp, x_ep, str(tmp_path), compile_check, backend=backend)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    dev = torch.device("cuda") if backend == "nccl" else torch.device("cpu")   # reference on the same kind of device
    ref_layer = MoELayer(layer.cfg, layer.gate.to(dev), layer.bias.to(dev), layer.weights.to(dev))
    ref_tp = moe_forward(ref_layer, x_tp.to(dev)).cpu()
    ref_ep = moe_forward(ref_layer, torch.cat(x_ep).to(dev)).cpu().split(list(EP_TOKENS[world]))
    for r in range(world):
        for key in ("tp_bf16", "tp_fp32"):
            assert torch.isfinite(res[r][key]).all(), key
            assert torch.equal(res[r][key], res[0][key]), f"{key}: ranks disagree"
            _assert_tp_close(res[r][key], ref_tp)
        for key in ("ep_exact_default", "ep_padded_default", "ep_exact_scattered", "ep_padded_scattered"):
            out = res[r][key]
            assert out.shape == ref_ep[r].shape, key
            assert torch.isfinite(out).all(), key
            if backend == "gloo":       # CPU reference GEMM: same rows, same order -> bit-exact
                assert torch.equal(out.view(torch.int16), ref_ep[r].view(torch.int16)), f"{key} rank {r}"
            elif out.numel():
                err = _rel_fro(out, ref_ep[r])
                assert err <= PARALLEL_EP_REL_FRO, f"{key} rank {r}: relative error {err:.3e}"
        assert res[r]["stats_default"]["dispatch_rows"] == EP_TOKENS[world][r] * CFG.top_k
        for name in ("default", "scattered"):
            assert res[r][f"dstats_{name}"]["dispatch_rows"] == res[r][f"distinct_{name}"]
            for key in (f"ep_dedup_exact_{name}", f"ep_dedup_padded_{name}"):
                assert res[r][key].shape == ref_ep[r].shape, key
                if ref_ep[r].numel():
                    _assert_tp_close(res[r][key], ref_ep[r])      # bf16 partial per owner: TP-like rounding
            if backend == "gloo":    # same partials, same order: the two dispatch modes agree exactly
                assert torch.equal(res[r][f"ep_dedup_exact_{name}"], res[r][f"ep_dedup_padded_{name}"])
        if backend == "nccl":
            _assert_tp_close(res[r]["tp_graph"], ref_tp)
            assert torch.equal(res[r]["ep_graph"], res[r]["ep_padded_scattered"]), "graph replay EP != eager"
        if compile_check:
            assert torch.equal(res[r]["tp_compiled"], res[r]["tp_bf16"]), "torch.compile TP != eager"
            assert torch.equal(res[r]["ep_padded_compiled"], res[r]["ep_padded_scattered"]), "torch.compile EP != eager"


@pytest.mark.parametrize("world", [2, 4])
def test_tp_and_ep_over_gloo_match_single_process(tmp_path, layer, world):
    _check_distributed(tmp_path, layer, world, compile_check=(world == 2))


@pytest.mark.gpu
def test_single_gpu_paths(tmp_path, layer):
    """What one GPU can check: the CUDA kernels under local_experts with an expert_map and id -1 rows
    (the EP owner's view), and TP/EP at world 1 over NCCL, eager and CUDA-graph replay."""
    # with an index: init_process_group(device_id=...) raises ValueError for torch.device("cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    gl = MoELayer(layer.cfg, layer.gate.to(dev), layer.bias.to(dev), layer.weights.to(dev))
    x = torch.randn(11, CFG.hidden, device=dev).to(torch.bfloat16)
    w, ids = par.route(gl, x)
    ids = ids.clone()
    ids[3, 1] = -1                         # an empty padded slot: must contribute nothing
    w_cpu, ids_cpu = w.cpu(), ids.cpu()
    owner = par.ep_owner(CFG.experts, 2)
    total = 0
    for r in range(2):
        local, emap = par.shard_ep(layer.weights, owner, r)
        out = par.local_experts(local.to(dev), x, w, ids, emap.to(dev))
        assert torch.isfinite(out).all()
        ref = par.local_experts(local, x.cpu(), w_cpu, ids_cpu, emap)           # CPU reference
        err = _rel_fro(out.cpu(), ref)
        assert err <= PARALLEL_EP_REL_FRO, f"rank {r}: {err:.3e}"
        total = total + out.float()
    # both owners together = every pair except the empty slot, computed on one rank
    w_all = torch.where(ids < 0, torch.zeros_like(w), w)
    full = par.local_experts(gl.weights, x, w_all, torch.where(ids < 0, torch.zeros_like(ids), ids))
    assert _rel_fro(total.to(torch.bfloat16), full) <= PARALLEL_TP_REL_FRO
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1,
                            device_id=dev)
    try:
        ref = moe_forward(gl, x)
        tp = par.shard_tp_layer(gl, 0, 1)
        ep = par.EPLayer.from_layer(gl, 0, 1)
        runs = {"tp": lambda: par.tp_moe_forward(tp, x),
                "ep_exact": lambda: par.ep_moe_forward(ep, x),
                "ep_padded": lambda: par.ep_moe_forward(ep, x, mode="padded", capacity=11 * CFG.top_k),
                "ep_dedup": lambda: par.ep_moe_forward(ep, x, dedup=True)}
        eager = {k: f() for k, f in runs.items()}
        for k, out in eager.items():
            assert _rel_fro(out, ref) <= PARALLEL_EP_REL_FRO, k
        for k in ("tp", "ep_padded"):        # no host sync: capturable
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                runs[k]()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = runs[k]()
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(out, eager[k]), f"{k}: graph replay != eager"
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs >= 2 GPUs")
@pytest.mark.parametrize("world", [2, 4])
def test_tp_and_ep_over_nccl_match_single_process(tmp_path, layer, world):
    if torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} GPUs")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")        # multicast off (device tool KINDS.md)
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    _check_distributed(tmp_path, layer, world, backend="nccl")


@pytest.mark.slow
def test_benchmark_runs_on_cpu_with_gloo(tmp_path):
    """benchmarks/bench_parallel.py stays runnable: 2 CPU processes, tiny preset (timings are not
    looked at; they mean nothing on CPU)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "table.md"
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           os.path.join(root, "benchmarks", "bench_parallel.py"), "--device", "cpu", "--preset", "tiny",
           "--tokens", "1,8", "--iters", "1", "--warmup", "0", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=JOIN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    for row in ("| single | 8 |", "| tp2 | 8 |", "| ep2 exact | 8 |", "| ep2 padded | 8 |",
                "| ep2 dedup exact | 8 |", "| ep2 dedup padded | 8 |"):
        assert row in table, row
