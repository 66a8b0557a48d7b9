"""quantize_nvfp4_experts: per-expert NVFP4 activation quantization into the 128x4-swizzled scale
layout at 128-row-aligned expert blocks (the SM120 W4A4 path's A operand), optionally gathering rows.
CUDA kernel bit-exact vs the reference (codes, scale bytes, padding bytes, sf_offsets)."""
import pytest
import torch

from k2kernels import nvfp4, reference
from k2kernels.reference.sm120 import expert_sf_rows

from tolerances import EXACT

OP = torch.ops.k2kernels.quantize_nvfp4_experts

# (rows per expert, K): Kimi-K2 gate_up (K=7168) and down (K=2048) shapes with decode- and
# prefill-like routing, empty experts, and a K whose K/16 is not a multiple of 4 (padded columns).
SHAPES = [
    ((1,), 16),
    ((3, 0, 130, 1), 64),
    ((0, 0, 5), 80),
    ((2,) * 4 + (0,) * 380, 7168),         # E=384, decode: 8 rows
    ((17, 300, 0, 129, 128), 2048),
]


def _bytes(t):
    return t.view(torch.uint8)


def _offsets(rows, device="cpu"):
    return torch.tensor([0] + torch.tensor(rows).cumsum(0).tolist(), dtype=torch.int32, device=device)


def _edge_rows(K):
    """Every rounding tie, zeros, -0, e4m3 saturation, subnormal scales, NaN and inf (same policy
    as quantize_nvfp4: a non-finite block gets scale 0x7F (NaN) and codes 0)."""
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -6.0])
    nan_row = torch.randn(K)
    nan_row[3] = float("nan")
    nan_row[min(40, K - 1)] = float("inf")
    return torch.stack([ties.repeat(K // 16), torch.zeros(K), torch.full((K,), 1e30),
                        torch.full((K,), 1e-7) * torch.arange(1, K + 1), nan_row, -torch.zeros(K),
                        torch.full((K,), 6.0), torch.full((K,), -6.0)])


def _poison_allocator(device):
    """Fill freed caching-allocator blocks with 0xFF so outputs the kernel forgets to write show up."""
    junk = torch.empty(64 << 20, dtype=torch.uint8, device=device).fill_(0xFF)
    del junk


def _check_equal(got, ref):
    q, s, so = got
    rq, rs, rso = ref
    assert q.shape == rq.shape and s.shape == rs.shape and so.shape == rso.shape
    assert torch.equal(so.cpu(), rso)
    assert (q.cpu() != rq).sum().item() == EXACT
    assert (_bytes(s.cpu()) != _bytes(rs)).sum().item() == EXACT


# ---- reference (CPU) -----------------------------------------------------------------------------

@pytest.mark.parametrize("rows,K", SHAPES[:3] + SHAPES[4:])
def test_reference_blocks_equal_quantize_blocks(rows, K):
    """Each expert's block, unswizzled, is exactly quantize_blocks of its rows; everything else is 0."""
    E = len(rows)
    x = (torch.randn(sum(rows), K) * 3).to(torch.bfloat16)
    gs = torch.rand(E) * 0.01 + 0.001
    q, s, so = reference.quantize_nvfp4_experts(x, gs, _offsets(rows))
    kb = K // 16
    assert s.shape == (expert_sf_rows(sum(rows), E), (kb + 3) // 4 * 4)
    lin = nvfp4.unswizzle_scales(s, s.shape[0], kb).view(torch.uint8)
    seen = torch.zeros(s.shape[0], dtype=torch.bool)
    r = 0
    for e, m in enumerate(rows):
        assert so[e].item() % 128 == 0
        assert so[e + 1].item() - so[e].item() == (m + 127) // 128 * 128
        rq, rs = nvfp4.quantize_blocks(x[r:r + m], gs[e])
        assert torch.equal(q[r:r + m], rq)
        assert torch.equal(lin[so[e]:so[e] + m], _bytes(rs))
        seen[so[e]:so[e] + m] = True
        r += m
    assert (lin[~seen] == 0).all()
    # The padded columns of the swizzled tiles are zero too (K/16 not a multiple of 4).
    assert _bytes(s).sum() == lin.sum() or kb % 4 == 0


def test_reference_gather_and_bad_indices():
    x = torch.randn(10, 32).to(torch.bfloat16)
    idx = torch.tensor([3, -1, 9, 10, 0], dtype=torch.int32)
    gs = torch.tensor(0.01)
    q, s, so = reference.quantize_nvfp4_experts(x, gs, _offsets((5,)), idx)
    rq, rs = nvfp4.quantize_blocks(x[[3, 9, 9, 9, 0]], gs)
    lin = nvfp4.unswizzle_scales(s, s.shape[0], 2)
    for r, ok in enumerate([True, False, True, False, True]):
        if ok:
            assert torch.equal(q[r], rq[r]) and torch.equal(_bytes(lin[r]), _bytes(rs[r]))
        else:                                   # index outside [0, 10): a zero row
            assert (q[r] == 0).all() and (_bytes(lin[r]) == 0).all()


def test_reference_tail_rows_are_zero():
    x = torch.randn(7, 32).to(torch.bfloat16) + 3
    q, s, so = reference.quantize_nvfp4_experts(x, torch.tensor(0.01), torch.tensor([0, 2, 4], dtype=torch.int32))
    assert (q[4:] == 0).all() and (q[:4] != 0).any()


@pytest.mark.parametrize("bad,match", [
    (lambda a: (a[0].float(),) + a[1:], "x must be bfloat16"),
    (lambda a: (a[0][:, :24].contiguous(),) + a[1:], "K % 16"),
    (lambda a: (a[0], torch.ones(5), a[2], a[3]), "global_scale must be float32"),
    (lambda a: (a[0], a[1], a[2].long(), a[3]), "expert_offsets must be int32"),
    (lambda a: (a[0], a[1], a[2], a[3].long()), "row_idx must be int32"),
    (lambda a: (a[0], a[1], a[2].flip(0).contiguous(), a[3]), "expert_offsets must start at 0"),
])
def test_bad_input_value_error(bad, match):
    from inputs import quantize_nvfp4_experts_args
    with pytest.raises(ValueError, match=match):
        OP(*bad(quantize_nvfp4_experts_args()))


def test_fake_matches_reference_shapes():
    from inputs import quantize_nvfp4_experts_args
    args = quantize_nvfp4_experts_args()
    ref = OP(*args)
    meta = OP(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])
    for r, m in zip(ref, meta):
        assert r.shape == m.shape and r.dtype == m.dtype


def test_compile_fullgraph_cpu():
    from inputs import quantize_nvfp4_experts_args
    args = quantize_nvfp4_experts_args()
    eager = OP(*args)
    comp = torch.compile(lambda *a: OP(*a), fullgraph=True, backend="aot_eager")(*args)
    for e, c in zip(eager, comp):
        assert torch.equal(_bytes(e), _bytes(c))


# ---- CUDA kernel ---------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("per_expert", [False, True])
@pytest.mark.parametrize("rows,K", SHAPES)
def test_kernel_bit_exact_random(rows, K, per_expert, gather):
    E, M = len(rows), sum(rows)
    src = M + 7 if gather else M
    x = (torch.randn(src, K) * 3).to(torch.bfloat16)
    gs = (torch.rand(E) * 0.01 + 1e-3) if per_expert else torch.tensor(x.float().abs().max().item() / (6 * 448))
    idx = torch.randperm(src)[:M].to(torch.int32) if gather else None
    ref = reference.quantize_nvfp4_experts(x, gs, _offsets(rows), idx)
    _poison_allocator("cuda")
    got = OP(x.cuda(), gs.cuda(), _offsets(rows, "cuda"), None if idx is None else idx.cuda())
    _check_equal(got, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("gs", [1.0, 0.37, 1e-3, 1e-6])
def test_kernel_bit_exact_edges(gs):
    """Edge rows spread over three experts (one empty), K=64 and K=80 (padded scale columns)."""
    for K in (64, 80):
        x = torch.cat([_edge_rows(K), _edge_rows(K) * 0.5]).to(torch.bfloat16)
        rows = (5, 0, 11)
        g = torch.tensor([gs, 2 * gs, gs / 3])
        ref = reference.quantize_nvfp4_experts(x, g, _offsets(rows))
        _poison_allocator("cuda")
        got = OP(x.cuda(), g.cuda(), _offsets(rows, "cuda"))
        _check_equal(got, ref)


@pytest.mark.gpu
def test_kernel_tail_rows_and_bad_gather_indices():
    x = (torch.randn(40, 64) + 1).to(torch.bfloat16)
    idx = torch.tensor([1, -5, 39, 40, 7, 2**30, 0, 3, 4, 5], dtype=torch.int32)
    offsets = torch.tensor([0, 4, 4, 7], dtype=torch.int32)      # rows 7..9 belong to no expert
    g = torch.tensor([0.01, 0.02, 0.03])
    ref = reference.quantize_nvfp4_experts(x, g, offsets, idx)
    _poison_allocator("cuda")
    got = OP(x.cuda(), g.cuda(), offsets.cuda(), idx.cuda())
    _check_equal(got, ref)


@pytest.mark.gpu
def test_kernel_garbage_offsets_stay_in_bounds():
    """Offsets out of range or decreasing: the kernel must not fault (values are unspecified)."""
    x = torch.randn(16, 64, device="cuda").to(torch.bfloat16)
    for offs in ([0, 100, 3], [-5, 8, 2**30], [9, 2, 16]):
        q, s, so = OP(x, torch.tensor(0.01, device="cuda"), torch.tensor(offs, dtype=torch.int32, device="cuda"))
        torch.cuda.synchronize()
        assert so.shape == (3,)


@pytest.mark.gpu
def test_kernel_graph_replay_equals_eager():
    rows = (3, 0, 200, 61)
    x = torch.randn(264 + 9, 2048, device="cuda").to(torch.bfloat16)
    g = torch.rand(4, device="cuda") * 0.01 + 1e-3
    off = _offsets(rows, "cuda")
    idx = torch.randperm(273, device="cuda")[:264].to(torch.int32)
    e = OP(x, g, off, idx)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        r = OP(x, g, off, idx)
    for t in r:                      # poison: replay must rewrite every byte, padding included
        _bytes(t).fill_(0xFF)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(e, r):
        assert torch.equal(_bytes(a), _bytes(b))


@pytest.mark.gpu
def test_kernel_compile_fullgraph():
    from inputs import quantize_nvfp4_experts_args
    args = quantize_nvfp4_experts_args(device="cuda")
    eager = OP(*args)
    comp = torch.compile(lambda *a: OP(*a), fullgraph=True)(*args)
    for e, c in zip(eager, comp):
        assert torch.equal(_bytes(e), _bytes(c))


@pytest.mark.gpu
def test_kernel_is_registered_not_fallback():
    import k2kernels
    report = k2kernels.load_kernels()
    assert report["quantize_nvfp4_experts"] == "cuda kernel", report
