"""moe_align: reference vs a Python-loop brute force (CPU); CUDA kernel == reference exactly (the
result is fully determined by the input, so no tolerance), plus the invariants on every output."""
import pytest
import torch

import k2kernels  # noqa: F401
from k2kernels.reference.align import moe_align as ref_align

gpu = pytest.mark.gpu
op = torch.ops.k2kernels.moe_align

# (T, k): decode sizes (one-warp path: T*k <= 32, its boundary 32 / 33; single-CTA path: T*k <= 4096),
# that boundary, and prefill (multi-CTA path).
SIZES = ((0, 8), (1, 8), (4, 8), (3, 11), (7, 6), (64, 8), (512, 8), (513, 8), (4097, 8), (16384, 8), (3, 1),
         (2, 16), (1000, 16))
EXPERTS = (8, 384, 1024, 8192)
BLOCKS = (1, 16, 128)


def make_ids(T, k, n_global, dtype=torch.int32, device="cpu", seed=0, distinct=True):
    g = torch.Generator().manual_seed(seed + 17 * T + k + n_global)
    if distinct and k <= n_global:
        ids = torch.rand(T, n_global, generator=g).argsort(-1)[:, :k]     # a router's k distinct experts
    else:
        ids = torch.randint(0, n_global, (T, k), generator=g)
    return ids.to(dtype).to(device)


def make_map(n_global, E, device="cpu", seed=0):
    """A rank's expert map: a random subset of E of the n_global experts, the rest -1."""
    g = torch.Generator().manual_seed(seed + n_global)
    m = torch.full((n_global,), -1, dtype=torch.int32)
    chosen = torch.randperm(n_global, generator=g)[:E]
    m[chosen] = torch.arange(E, dtype=torch.int32)
    return m.to(device)


def brute_force_align(ids, E, bs, emap):
    flat = ids.reshape(-1).tolist()
    n_global = len(emap) if emap is not None else E
    local = []
    for i in flat:
        e = -1
        if 0 <= i < n_global:
            e = emap[i].item() if emap is not None else i
        local.append(e if 0 <= e < E else -1)
    groups = [[p for p, e in enumerate(local) if e == x] for x in range(E)]
    rest = [p for p, e in enumerate(local) if e < 0]
    order = [p for grp in groups for p in grp] + rest
    off, pad = [0], [0]
    for grp in groups:
        off.append(off[-1] + len(grp))
        pad.append(pad[-1] + (len(grp) + bs - 1) // bs * bs)
    inv = [-1] * len(flat)
    for pos, p in enumerate(order):
        if local[p] >= 0:
            inv[p] = pos
    t = lambda v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    return t(off), t(order), t(inv), t(pad)


def check_invariants(ids, E, bs, emap, outs):
    """Every property the MoE GEMMs and the combine rely on, from the outputs alone."""
    off, order, inv, pad = (o.cpu().long() for o in outs)
    flat = ids.reshape(-1).cpu().long()
    n = flat.numel()
    assert off.shape == (E + 1,) and pad.shape == (E + 1,) and order.shape == (n,) and inv.shape == (n,)
    n_global = emap.shape[0] if emap is not None else E
    ok = (flat >= 0) & (flat < n_global)
    local = torch.full_like(flat, -1)
    if emap is not None:
        local[ok] = emap.cpu().long()[flat[ok]]
    else:
        local[ok] = flat[ok]
    local[(local < 0) | (local >= E)] = -1
    on_rank = local >= 0
    # every pair exactly once
    assert torch.equal(order.sort().values, torch.arange(n))
    # offsets: monotone, counts match, off[E] = pairs on this rank
    counts = torch.bincount(local[on_rank], minlength=E)
    assert off[0] == 0 and torch.equal(off.diff(), counts) and off[E] == on_rank.sum()
    # grouping + stability: the pairs at expert e's positions have expert e and increase in p
    seg = torch.repeat_interleave(torch.arange(E), counts)
    assert torch.equal(local[order[: off[E]]], seg)
    for e in range(E):
        s = order[off[e]:off[e + 1]]
        assert (s.diff() > 0).all()
    rest = order[off[E]:]
    assert (local[rest] < 0).all() and (rest.diff() > 0).all()
    # inverse: position of each pair; -1 exactly for the pairs not on this rank
    assert torch.equal(inv[~on_rank], torch.full(((~on_rank).sum().item(),), -1))
    assert torch.equal(order[inv[on_rank]], torch.arange(n)[on_rank])
    # padded offsets: counts rounded up to block_size
    padded_counts = (counts + bs - 1) // bs * bs
    assert pad[0] == 0 and torch.equal(pad.diff(), padded_counts)
    assert (pad[:-1] % bs == 0).all()


# ---------------------------------------------------------------- CPU

@pytest.mark.parametrize("T,k", [(0, 4), (1, 1), (5, 3), (9, 8), (33, 6)])
@pytest.mark.parametrize("E", [1, 4, 16])
@pytest.mark.parametrize("bs", [1, 4])
@pytest.mark.parametrize("mapped", [False, True])
def test_reference_vs_brute_force(T, k, E, bs, mapped):
    n_global = 2 * E + 1 if mapped else E
    emap = make_map(n_global, E) if mapped else None
    ids = make_ids(T, k, n_global, distinct=False)
    if T > 2:
        ids[1, 0] = -3                    # out of range: not on this rank, never an error
        ids[2, -1] = n_global + 5
    outs = ref_align(ids, E, bs, emap)
    for a, b in zip(outs, brute_force_align(ids, E, bs, emap)):
        assert torch.equal(a, b)
    check_invariants(ids, E, bs, emap, outs)


def test_invariants_catch_unstable_order():
    ids = torch.tensor([[1, 0], [1, 0]], dtype=torch.int32)
    off, order, inv, pad = ref_align(ids, 2, 1)
    order = order.clone()
    order[0], order[1] = order[1].item(), order[0].item()       # swap two pairs of expert 0
    with pytest.raises(AssertionError):
        check_invariants(ids, 2, 1, None, (off, order, inv, pad))


def test_cpu_opcheck():
    ids = make_ids(9, 4, 16)
    torch.library.opcheck(op, (ids, 16, 1, None))
    torch.library.opcheck(op, (ids.long(), 8, 4, make_map(16, 8)))
    torch.library.opcheck(op, (ids[:0], 16, 8, None))


def test_bad_input_cpu():
    ids = make_ids(4, 2, 8)
    with pytest.raises(ValueError, match="ids must be int32/int64"):
        op(ids.float(), 8, 1, None)
    with pytest.raises(ValueError, match="num_experts must be in"):
        op(ids, 0, 1, None)
    with pytest.raises(ValueError, match="num_experts must be in"):
        op(ids, 9000, 1, None)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        op(ids, 8, 0, None)
    with pytest.raises(ValueError, match="expert_map must be int32"):
        op(ids, 8, 1, torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match="must be < 2"):
        op(ids, 8, 2 ** 30, None)


# ---------------------------------------------------------------- GPU

def _poison_allocator(nbytes, count=6):
    bufs = [torch.full((max(nbytes, 1),), 0xFF, dtype=torch.uint8, device="cuda") for _ in range(count)]
    del bufs


@gpu
@pytest.mark.parametrize("T,k", SIZES)
@pytest.mark.parametrize("E", EXPERTS)
@pytest.mark.parametrize("bs", BLOCKS)
@pytest.mark.parametrize("mapped", [False, True])
def test_kernel_equals_reference(T, k, E, bs, mapped):
    n_global = E + E // 2 + 1 if mapped else E
    emap = make_map(n_global, E, device="cuda") if mapped else None
    ids = make_ids(T, k, n_global, device="cuda")
    _poison_allocator(T * k * 4)
    outs = op(ids, E, bs, emap)
    refs = ref_align(ids.cpu(), E, bs, None if emap is None else emap.cpu())
    for name, a, b in zip(("offsets", "sorted_pairs", "inverse", "padded_offsets"), outs, refs):
        assert a.dtype == torch.int32 and torch.equal(a.cpu(), b), name
    if T * k <= 20000:
        check_invariants(ids, E, bs, emap, outs)


@gpu
@pytest.mark.parametrize("T", [4, 7, 600, 4097])
def test_kernel_int64_ids_out_of_range_and_skewed(T):
    E = 384
    ids = make_ids(T, 8, E, dtype=torch.int64, device="cuda")
    ids[0, 0] = -1
    ids[T // 2, 3] = 2 ** 40                # beyond int32: excluded, never indexes memory
    ids[T - 1, 7] = E
    for x in (ids, torch.zeros_like(ids), torch.full_like(ids, E - 1)):   # also every pair on one expert
        outs = op(x, E, 16, None)
        refs = ref_align(x.cpu(), E, 16, None)
        for a, b in zip(outs, refs):
            assert torch.equal(a.cpu(), b)
    emap = make_map(E, 100, device="cuda")
    emap[5] = 100                           # a map value outside [0, E): excluded
    emap[6] = -7
    outs = op(ids, 100, 1, emap)
    refs = ref_align(ids.cpu(), 100, 1, emap.cpu())
    for a, b in zip(outs, refs):
        assert torch.equal(a.cpu(), b)


@gpu
@pytest.mark.parametrize("T", [4, 64, 16384])       # one-warp, single-CTA and multi-CTA paths
def test_kernel_deterministic_and_graph_replay(T):
    ids = make_ids(T, 8, 384, device="cuda")
    a = op(ids, 384, 128, None)
    b = op(ids, 384, 128, None)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        op(ids, 384, 128, None)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = op(ids, 384, 128, None)
    for o in outs:
        o.fill_(-7)
    ids.copy_(make_ids(T, 8, 384, device="cuda", seed=1))
    g.replay()
    torch.cuda.synchronize()
    eager = op(ids, 384, 128, None)
    assert all(torch.equal(x, y) for x, y in zip(outs, eager))
    assert not torch.equal(outs[1], a[1])


@gpu
def test_gpu_opcheck_and_compile():
    ids = make_ids(33, 8, 384, device="cuda")
    torch.library.opcheck(op, (ids, 384, 16, None))
    torch.library.opcheck(op, (make_ids(600, 8, 384, device="cuda"), 200, 1, make_map(384, 200, device="cuda")))
    torch.library.opcheck(op, (ids[:0], 384, 1, None))

    def f(x):
        off, order, inv, pad = torch.ops.k2kernels.moe_align(x, 384, 16, None)
        return off + 0, order, inv, pad

    cf = torch.compile(f, fullgraph=True)
    assert all(torch.equal(x, y) for x, y in zip(cf(ids), f(ids)))


@gpu
def test_bad_input_gpu():
    ids = make_ids(4, 2, 8, device="cuda")
    with pytest.raises(ValueError, match="ids must be int32/int64"):
        op(ids.float(), 8, 1, None)
    with pytest.raises(ValueError, match="num_experts must be in"):
        op(ids, 9000, 1, None)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        op(ids, 8, 0, None)
    with pytest.raises(ValueError, match="all tensors must be on one device"):
        op(ids, 8, 1, make_map(8, 8))
    with pytest.raises(ValueError, match="contiguous"):
        op(make_ids(8, 4, 8, device="cuda").t(), 8, 1, None)
