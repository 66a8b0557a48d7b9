"""topk_router: reference vs an independent brute force (CPU), CUDA kernel vs reference (GPU).

Tie-tolerant where the kernel's exp/sigmoid (a few ulp from torch's) can reorder near-equal scores:
ids unique and in range, the reference's selection scores at the kernel's ids equal (sorted) those at
the reference's ids, weights equal the reference's scores at the kernel's ids; and exact ids where
no two of the top k+1 scores are within TIE_GAP of each other. An exact fp32 tie of two DIFFERENT
inputs counts as a near-tie (E=1024, T=4097 has one: c = 1.11126709 for experts 455 and 451 of row
1125, which a 1-ulp different sigmoid splits); the lower-index rule for equal inputs is tested exactly
by test_kernel_all_equal_and_ties."""
import math

import pytest
import torch

import k2kernels  # noqa: F401  (defines torch.ops.k2kernels)
from k2kernels.reference.router import group_scores, router_scores, topk_router as ref_router
from tolerances import ROUTER_ATOL, ROUTER_SCORE_ATOL

gpu = pytest.mark.gpu
op = torch.ops.k2kernels.topk_router

KIMI = dict(top_k=8, scoring="sigmoid", n_group=1, topk_group=1, renormalize=True, routed_scaling_factor=2.827)
EXPERTS = (8, 64, 256, 384, 512, 1024)
ODD_EXPERTS = (7, 33, 1023)                  # E % 4 != 0: the scalar-load layout
TOPK = (1, 6, 8, 16)
GROUPS = ((1, 1), (8, 4))
TOKENS = (0, 1, 7, 64, 4097)
TIE_GAP = 1e-5


def allowed_k(E, n_group, topk_group):
    return min(16, topk_group * (E // n_group)) if E % n_group == 0 else 0


def make_inputs(T, E, with_bias, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed * 7919 + T * 31 + E)
    logits = torch.randn(T, E, generator=g).to(dtype).to(device)
    bias = (torch.randn(E, generator=g) * 0.1).to(device) if with_bias else None
    return logits, bias


def call(fn, logits, bias, k, scoring, ng, tg, renorm=True, rsf=2.827):
    return fn(logits, bias, k, scoring, ng, tg, renorm, rsf)


def assert_router_matches(w, ids, logits, bias, k, scoring, ng, tg, renorm=True, rsf=2.827, exact_ids=True):
    """Kernel output (any device) vs the reference on CPU, tie-tolerant as the module doc says."""
    T, E = logits.shape
    # the reference runs where the inputs are (same semantics on every device), checks run on CPU
    s, c = (x.cpu() for x in router_scores(logits, bias, scoring, ng, tg))
    w_ref, ids_ref = (x.cpu() for x in ref_router(logits, bias, k, scoring, ng, tg, renorm, rsf))
    w, ids = w.cpu(), ids.cpu().long()
    logits = logits.cpu()
    bias = None if bias is None else bias.cpu()
    assert w.shape == (T, k) and ids.shape == (T, k) and w.dtype == torch.float32 and ids.dtype == torch.int64
    if T == 0:
        return
    assert torch.isfinite(w).all(), "non-finite weight (unwritten output?)"
    assert ((ids >= 0) & (ids < E)).all(), "expert id out of range (unwritten output?)"
    assert (ids.sort(-1).values.diff(dim=-1) != 0).all(), "an expert picked twice in one row"
    ids_ref = ids_ref.long()
    w_exp = s.gather(1, ids)
    if renorm:
        w_exp = w_exp / w_exp.sum(-1, keepdim=True).clamp_min(1e-20)
    torch.testing.assert_close(w, w_exp * rsf, atol=ROUTER_ATOL, rtol=1e-5)      # weights = s at the ids
    # Rows whose topk_group-th and next group scores are within TIE_GAP may keep the other group:
    # there, only check that every pick lies in a group scoring within TIE_GAP of the kept ones.
    amb = torch.zeros(T, dtype=torch.bool)
    if ng > 1 and tg < ng:
        fmax = torch.finfo(torch.float32).max
        bb = None if bias is None else torch.nan_to_num(bias, nan=-fmax, posinf=fmax, neginf=-fmax)
        gsc = group_scores(s, s + bb if bb is not None else s, bias is not None, ng)
        top = gsc.sort(-1, descending=True).values
        amb = (top[:, tg - 1] - top[:, tg]) <= TIE_GAP
        picked = gsc[amb].gather(1, ids[amb] // (E // ng))
        assert (picked >= top[amb, tg - 1:tg] - TIE_GAP).all(), "picked an expert of a dropped group"
    c_k, c_r = c[~amb].gather(1, ids[~amb]), c[~amb].gather(1, ids_ref[~amb])
    assert torch.isfinite(c_k).all(), "picked an expert of a dropped group"
    torch.testing.assert_close(c_k, c_r, atol=ROUTER_SCORE_ATOL, rtol=0)         # same scores, same order
    if exact_ids:
        top = c.sort(-1, descending=True).values[:, : min(k + 1, E)]
        gaps = -top.diff(dim=-1) if top.shape[1] > 1 else torch.zeros(T, 0)
        near = (gaps <= TIE_GAP).any(-1)         # incl. exact fp32 ties of different inputs (H200 run 2)
        clean = ~near & ~amb
        assert (ids[clean] == ids_ref[clean]).all(), \
            f"ids differ on {(ids[clean] != ids_ref[clean]).any(-1).sum()} rows without near-ties"


# ---------------------------------------------------------------- CPU: reference vs brute force

def brute_force_router(logits, bias, k, scoring, ng, tg, renorm, rsf):
    """Python loops over one row at a time, in float64 (no torch sort/topk)."""
    fmax = torch.finfo(torch.float32).max
    out_w, out_i = [], []
    for row in logits.double().tolist():
        x = [(-fmax if math.isnan(v) else max(-fmax, min(fmax, v))) for v in row]
        E = len(x)
        if scoring == "sigmoid":
            s = [1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0 for v in x]
        else:
            m = max(x)
            e = [math.exp(v - m) if v - m > -700 else 0.0 for v in x]
            s = [v / sum(e) for v in e]
        b = [0.0] * E if bias is None else bias.double().tolist()
        c = [s[i] + b[i] for i in range(E)]
        gs = E // ng
        if ng > 1:
            scores = []
            for g in range(ng):
                vals = sorted(c[g * gs:(g + 1) * gs], reverse=True) if bias is not None else \
                    [max(s[g * gs:(g + 1) * gs])]
                scores.append(sum(vals[:2]) if bias is not None and gs >= 2 else vals[0])
            kept = sorted(range(ng), key=lambda g: (-scores[g], g))[:tg]
            c = [c[i] if i // gs in kept else -math.inf for i in range(E)]
        order = sorted(range(E), key=lambda i: (-c[i], i))[:k]
        w = [s[i] for i in order]
        if renorm:
            tot = max(sum(w), 1e-20)
            w = [v / tot for v in w]
        out_w.append([v * rsf for v in w])
        out_i.append(order)
    return torch.tensor(out_w, dtype=torch.float32).reshape(-1, k), torch.tensor(out_i).reshape(-1, k)


@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("E,k,ng,tg", [(8, 2, 1, 1), (64, 6, 8, 4), (64, 8, 1, 1), (384, 8, 1, 1),
                                       (96, 16, 8, 4), (16, 2, 16, 3)])
def test_reference_vs_brute_force(scoring, with_bias, E, k, ng, tg):
    logits, bias = make_inputs(7, E, with_bias)
    w, ids = ref_router(logits, bias, k, scoring, ng, tg, True, 2.827)
    w_bf, ids_bf = brute_force_router(logits, bias, k, scoring, ng, tg, True, 2.827)
    assert (ids.long() == ids_bf).all()
    torch.testing.assert_close(w, w_bf, atol=ROUTER_ATOL, rtol=1e-5)


def test_reference_all_equal_logits_pick_lowest_indices():
    w, ids = ref_router(torch.full((3, 384), 0.25), None, **KIMI)
    assert (ids == torch.arange(8, dtype=torch.int32)).all()
    torch.testing.assert_close(w, torch.full((3, 8), 2.827 / 8))


def test_reference_non_finite_policy():
    fmax = torch.finfo(torch.float32).max
    x = torch.randn(4, 64)
    x[0, 5] = float("nan")
    x[1, :] = float("nan")                     # whole row NaN
    x[2, 3] = float("inf")
    x[3, :] = float("-inf")
    w, ids = ref_router(x, None, 8, "sigmoid", 1, 1, True, 1.0)
    assert torch.isfinite(w).all()
    assert 5 not in ids[0].tolist()
    assert ids[1].tolist() == list(range(8)) and (w[1] == 0).all()     # all scores 0, lowest indices
    assert ids[2, 0] == 3
    w2, ids2 = ref_router(x, None, 8, "softmax", 1, 1, False, 1.0)
    assert torch.isfinite(w2).all()
    torch.testing.assert_close(w2[3], torch.full((8,), 1 / 64))         # uniform over a dead row
    assert w2[2, 0] == 1.0
    # a NaN bias entry is the lowest bias: never picked ahead of a finite one
    b = torch.zeros(64)
    b[0] = float("nan")
    _, ids3 = ref_router(torch.zeros(2, 64), b, 8, "sigmoid", 1, 1, True, 1.0)
    assert 0 not in ids3.tolist()[0]
    assert fmax > 0


def test_checker_passes_reference_and_catches_wrong_picks():
    logits, bias = make_inputs(64, 256, True)
    for ng, tg in ((1, 1), (8, 4)):
        w, ids = ref_router(logits, bias, 8, "sigmoid", ng, tg, True, 2.827)
        assert_router_matches(w, ids, logits, bias, 8, "sigmoid", ng, tg)
        bad = ids.clone()
        bad[3, 7] = next(e for e in range(256) if e not in ids[3].tolist() and e // 32 != ids[3, 0] // 32)
        with pytest.raises(AssertionError):
            assert_router_matches(w, bad, logits, bias, 8, "sigmoid", ng, tg)
        with pytest.raises(AssertionError):
            assert_router_matches(w * 1.001, ids, logits, bias, 8, "sigmoid", ng, tg)
        swapped = ids.clone()
        swapped[5, [0, 1]] = swapped[5, [1, 0]]
        with pytest.raises(AssertionError):
            assert_router_matches(w, swapped, logits, bias, 8, "sigmoid", ng, tg)


def test_cpu_opcheck():
    logits, bias = make_inputs(5, 64, True)
    torch.library.opcheck(op, (logits, bias, 6, "sigmoid", 8, 4, True, 2.5))
    torch.library.opcheck(op, (logits.bfloat16(), None, 4, "softmax", 1, 1, False, 1.0))
    torch.library.opcheck(op, (logits[:0], bias, 8, "sigmoid", 1, 1, True, 1.0))


BAD = [
    (lambda d: (torch.randn(4, 64, device=d).half(), None, 8), "logits must be float32/bfloat16"),
    (lambda d: (torch.randn(4, 2000, device=d), None, 8), "1 <= E <= 1024"),
    (lambda d: (torch.randn(4, 64, device=d), torch.randn(63, device=d), 8), "bias must be float32 [64]"),
    (lambda d: (torch.randn(4, 64, device=d), torch.randn(64, device=d).double(), 8), "bias must be float32 [64]"),
    (lambda d: (torch.randn(4, 64, device=d), None, 17), "top_k must be in [1, 16]"),
    (lambda d: (torch.randn(4, 64, device=d), None, 0), "top_k must be in"),
    (lambda d: (torch.randn(64, 4, device=d).t(), None, 2), "logits must be contiguous"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_input_cpu(i):
    make, msg = BAD[i]
    logits, bias, k = make("cpu")
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        op(logits, bias, k, "sigmoid", 1, 1, True, 1.0)


def test_bad_groups_and_scoring_cpu():
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match="n_group must divide E"):
        op(x, None, 2, "sigmoid", 5, 1, True, 1.0)
    with pytest.raises(ValueError, match="topk_group must be in"):
        op(x, None, 2, "sigmoid", 8, 9, True, 1.0)
    with pytest.raises(ValueError, match="scoring must be one of"):
        op(x, None, 2, "relu", 1, 1, True, 1.0)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 8\]"):   # one group of 8 kept
        op(x, None, 9, "sigmoid", 8, 1, True, 1.0)


# ---------------------------------------------------------------- GPU: kernel vs reference

def _poison_allocator(nbytes, count=4):
    """Leave freed blocks of this size full of 0xFF in the caching allocator, so outputs the op
    allocates start as NaN (fp32) / -1 (int32) and an element the kernel skips is caught."""
    bufs = [torch.full((max(nbytes, 1),), 0xFF, dtype=torch.uint8, device="cuda") for _ in range(count)]
    del bufs


def _cases():
    for E in EXPERTS:
        for k in TOPK:
            for ng, tg in GROUPS:
                if k <= allowed_k(E, ng, tg):
                    yield E, k, ng, tg


@gpu
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("E,k,ng,tg", list(_cases()))
def test_kernel_vs_reference(E, k, ng, tg, with_bias, scoring, T):
    logits, bias = make_inputs(T, E, with_bias, device="cuda")
    _poison_allocator(T * k * 4)
    w, ids = call(op, logits, bias, k, scoring, ng, tg)
    torch.cuda.synchronize()
    assert_router_matches(w, ids, logits, bias, k, scoring, ng, tg)


@gpu
@pytest.mark.parametrize("E", ODD_EXPERTS + (384,))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("unaligned", [False, True])
@pytest.mark.parametrize("T", [1, 64, 4097])
def test_kernel_dtypes_and_layouts(E, dtype, unaligned, T):
    logits, bias = make_inputs(T, E, True, dtype=dtype, device="cuda")
    if unaligned:       # a contiguous view 1 element into a buffer: rows not 16/8-byte aligned
        buf = torch.empty(T * E + 1, dtype=dtype, device="cuda")
        buf[1:].copy_(logits.reshape(-1))
        logits = buf[1:].view(T, E)
    k = min(8, E)
    _poison_allocator(T * k * 4)
    w, ids = call(op, logits, bias, k, "sigmoid", 1, 1)
    assert_router_matches(w, ids, logits, bias, k, "sigmoid", 1, 1)


@gpu
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
@pytest.mark.parametrize("E,k,ng,tg", [(384, 8, 1, 1), (1024, 16, 1, 1), (256, 8, 8, 4), (8, 8, 1, 1)])
def test_kernel_all_equal_and_ties(scoring, E, k, ng, tg):
    x = torch.full((33, E), 0.5, device="cuda")
    w, ids = call(op, x, None, k, scoring, ng, tg)
    w_ref, ids_ref = ref_router(x.cpu(), None, k, scoring, ng, tg, True, 2.827)
    assert (ids.cpu() == ids_ref).all()
    torch.testing.assert_close(w.cpu(), w_ref, atol=ROUTER_ATOL, rtol=1e-5)
    # few distinct values: many exact ties, resolved to the lower index on both sides
    xt = torch.randint(0, 3, (257, E), device="cuda").float()
    w, ids = call(op, xt, None, k, scoring, ng, tg)
    w_ref, ids_ref = ref_router(xt.cpu(), None, k, scoring, ng, tg, True, 2.827)
    assert (ids.cpu() == ids_ref).all()
    torch.testing.assert_close(w.cpu(), w_ref, atol=ROUTER_ATOL, rtol=1e-5)


@gpu
@pytest.mark.parametrize("kernel", ["warp", "block"])
@pytest.mark.parametrize("T", [1, 7, 300])
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
@pytest.mark.parametrize("E,k", [(8, 8), (33, 6), (100, 16), (384, 8), (384, 16), (512, 1), (1023, 8), (1024, 16)])
def test_each_kernel_forced(E, k, scoring, T, kernel, monkeypatch):
    """Both router kernels forced (the launcher picks the block kernel for T <= 256, n_group == 1):
    each matches the reference, and with sigmoid scoring both pick the same experts."""
    monkeypatch.setenv("K2K_ROUTER_KERNEL", kernel)
    logits, bias = make_inputs(T, E, True, device="cuda", seed=T + E)
    _poison_allocator(T * k * 4)
    w, ids = call(op, logits, bias, k, scoring, 1, 1)
    assert_router_matches(w, ids, logits, bias, k, scoring, 1, 1)
    monkeypatch.setenv("K2K_ROUTER_KERNEL", "block" if kernel == "warp" else "warp")
    w2, ids2 = call(op, logits, bias, k, scoring, 1, 1)
    if scoring == "sigmoid":     # bit-identical scores on both paths (softmax sums in another order)
        assert torch.equal(ids, ids2)
    torch.testing.assert_close(w, w2, atol=ROUTER_ATOL, rtol=1e-5)


@gpu
@pytest.mark.parametrize("kernel", ["warp", "block"])
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_each_kernel_ties(kernel, scoring, monkeypatch):
    """All-equal and few-valued logits with each kernel forced (block: more than 64 candidates, the
    block-argmax path)."""
    monkeypatch.setenv("K2K_ROUTER_KERNEL", kernel)
    for x in (torch.full((33, 384), 0.5, device="cuda"), torch.randint(0, 3, (300, 384), device="cuda").float()):
        w, ids = call(op, x, None, 8, scoring, 1, 1)
        w_ref, ids_ref = ref_router(x.cpu(), None, 8, scoring, 1, 1, True, 2.827)
        assert (ids.cpu() == ids_ref).all()
        torch.testing.assert_close(w.cpu(), w_ref, atol=ROUTER_ATOL, rtol=1e-5)


def _near_tie_inputs(T, E, seed):
    """Every expert gets its own bias step (0.1 + a shuffled multiple of 2^-23: 2 ulps of c ~ 0.83); in
    each row the 12 experts of a random window of consecutive steps get logit 1.0, the rest far below.
    So c of those 12 lies 2 ulps apart, and the window sits at a different offset against the warp
    kernel's 32-unit tau slack in each row."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, E, generator=g) - 8.0
    ladder = torch.randperm(E, generator=g)                 # ladder[e] = expert e's bias step
    bias = 0.1 + ladder.float() * 2.0 ** -23
    order = ladder.argsort()                                # order[j] = the expert on step j
    start = torch.randint(0, E - 12, (T,), generator=g)
    close = order[start[:, None] + torch.arange(12)]        # [T, 12]
    logits.scatter_(1, close, 1.0)
    return logits, bias, close


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [5, 300])
def test_warp_kernel_near_ties_match_block_kernel(T, dtype, monkeypatch):
    """12 experts per row whose biased scores c lie 2 ulps apart (inside the warp kernel's tau slack of
    31 key units) and every other expert far below. The warp kernel must rank them exactly: with
    sigmoid scoring both kernels compute the same c bit for bit, so they must pick the same 8 experts in
    the same order, and both must match the reference."""
    E, k = 384, 8
    logits, bias, close = _near_tie_inputs(T, E, seed=T)
    logits = logits.to(dtype)
    _, c = router_scores(logits, bias, "sigmoid", 1, 1)
    assert (c.gather(1, close).sort(-1).values.diff(dim=-1) > 0).all()   # near-ties, not equal: the case meant
    logits, bias = logits.cuda(), bias.cuda()
    out = {}
    for kernel in ("warp", "block"):
        monkeypatch.setenv("K2K_ROUTER_KERNEL", kernel)
        _poison_allocator(T * k * 4)
        out[kernel] = call(op, logits, bias, k, "sigmoid", 1, 1)
        assert_router_matches(*out[kernel], logits, bias, k, "sigmoid", 1, 1)
    assert torch.equal(out["warp"][1], out["block"][1])
    assert (out["warp"][1].cpu()[:, :, None] == close[:, None, :]).any(-1).all()   # picks from the window


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_warp_kernel_beyond_one_wave(scoring, dtype):
    """More tokens than one wave of resident warps (the kernel then strides, each warp loading its next
    row while ranking the current one): bit-identical to the same rows routed in chunks small enough
    that no warp takes a second token, and matching the reference. E = 384 runs the variant without
    bounds checks."""
    E, k = 384, 8
    T = 3 * 32 * 8 * torch.cuda.get_device_properties(0).multi_processor_count + 123   # 24 waves of 32 x SMs
    logits, bias = make_inputs(T, E, True, dtype=dtype, device="cuda", seed=11)
    _poison_allocator(T * k * 4)
    w, ids = call(op, logits, bias, k, scoring, 1, 1)
    parts = [call(op, logits[i:i + 999], bias, k, scoring, 1, 1) for i in range(0, T, 999)]
    assert torch.equal(ids, torch.cat([p[1] for p in parts]))
    assert torch.equal(w, torch.cat([p[0] for p in parts]))
    assert_router_matches(w, ids, logits, bias, k, scoring, 1, 1)


@gpu
@pytest.mark.parametrize("boosted", [12, 20, 96])
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_block_kernel_crowded_warp(boosted, scoring, monkeypatch):
    """The block kernel's candidate table holds 16 per warp and warp 0 ranks two slots per lane when a
    warp has more than 8: boost `boosted` experts owned by warp 0 (experts e with e % 128 < 32) so that
    warp 0 alone has 12-20 candidates (most tokens: the second slot; the rest more than 16: the
    block-argmax path), 20-27 or 96 (block argmax)."""
    monkeypatch.setenv("K2K_ROUTER_KERNEL", "block")
    E, T = 384, 40
    logits, _ = make_inputs(T, E, False, device="cuda", seed=boosted)   # no bias: the scores alone decide
    warp0 = [e for e in range(E) if e % 128 < 32][:boosted]
    others = [e for e in range(E) if e not in set(warp0)]
    logits[:, warp0] += 4.0
    logits[:, others] -= 4.0
    _poison_allocator(T * 8 * 4)
    w, ids = call(op, logits, None, 8, scoring, 1, 1)
    assert_router_matches(w, ids, logits, None, 8, scoring, 1, 1)
    assert set(ids.flatten().tolist()) <= set(warp0)      # the boosted experts win: the case is the one meant


@gpu
def test_unknown_router_knob_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("K2K_ROUTER_KERNEL", "lane")
    with pytest.raises(ValueError, match="K2K_ROUTER_KERNEL"):
        op(torch.randn(2, 64, device="cuda"), None, 4, "sigmoid", 1, 1, True, 1.0)


@gpu
@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_kernel_non_finite(scoring):
    T, E = 64, 384
    x, bias = make_inputs(T, E, True, device="cuda")
    x[0, 7] = float("nan")
    x[1] = float("nan")
    x[2, 11] = float("inf")
    x[3] = float("-inf")
    x[4, ::3] = float("inf")
    x[5, ::2] = float("nan")
    bias[17] = float("nan")
    bias[19] = float("-inf")
    bias[23] = float("inf")
    for b in (None, bias):
        w, ids = call(op, x, b, 8, scoring, 1, 1)
        assert torch.isfinite(w).all()
        assert_router_matches(w, ids, x, b, 8, scoring, 1, 1)
        w_ref, ids_ref = ref_router(x.cpu(), b if b is None else b.cpu(), 8, scoring, 1, 1, True, 2.827)
        assert (ids.cpu()[:6] == ids_ref[:6]).all()          # the special rows, exactly


@gpu
def test_kernel_T0_and_options():
    x = torch.randn(0, 384, device="cuda")
    w, ids = op(x, None, 8, "sigmoid", 1, 1, True, 2.827)
    assert w.shape == (0, 8) and ids.shape == (0, 8)
    logits, bias = make_inputs(97, 384, True, device="cuda")
    for renorm, rsf in ((False, 1.0), (True, 1.0), (False, 2.827)):
        w, ids = call(op, logits, bias, 8, "sigmoid", 1, 1, renorm, rsf)
        assert_router_matches(w, ids, logits, bias, 8, "sigmoid", 1, 1, renorm, rsf)


@gpu
@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_input_gpu(i):
    make, msg = BAD[i]
    logits, bias, k = make("cuda")
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        op(logits, bias, k, "sigmoid", 1, 1, True, 1.0)
    x = torch.randn(2, 64, device="cuda")
    with pytest.raises(ValueError, match="n_group must divide E"):
        op(x, None, 2, "sigmoid", 5, 1, True, 1.0)
    with pytest.raises(ValueError, match="all tensors must be on one device"):
        op(x, torch.randn(64), 2, "sigmoid", 1, 1, True, 1.0)


@gpu
def test_gpu_opcheck():
    logits, bias = make_inputs(33, 384, True, device="cuda")
    torch.library.opcheck(op, (logits, bias, 8, "sigmoid", 1, 1, True, 2.827))
    torch.library.opcheck(op, (logits.bfloat16(), None, 6, "softmax", 8, 4, False, 1.0))
    torch.library.opcheck(op, (logits[:0], bias, 8, "sigmoid", 1, 1, True, 1.0))


@gpu
def test_torch_compile_fullgraph():
    logits, bias = make_inputs(64, 384, True, device="cuda")

    def f(x, b):
        w, ids = torch.ops.k2kernels.topk_router(x, b, 8, "sigmoid", 1, 1, True, 2.827)
        return w * 2, ids

    cf = torch.compile(f, fullgraph=True)
    w, ids = cf(logits, bias)
    w0, ids0 = f(logits, bias)
    assert torch.equal(w, w0) and torch.equal(ids, ids0)


@gpu
@pytest.mark.parametrize("T", [1, 64, 4097])
def test_cuda_graph_replay_equals_eager(T):
    logits, bias = make_inputs(T, 384, True, device="cuda")
    w0, ids0 = call(op, logits, bias, 8, "sigmoid", 1, 1)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        call(op, logits, bias, 8, "sigmoid", 1, 1)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        w, ids = call(op, logits, bias, 8, "sigmoid", 1, 1)
    w.fill_(float("nan"))
    ids.fill_(-1)
    new = torch.randn_like(logits)
    logits.copy_(new)
    g.replay()
    torch.cuda.synchronize()
    we, idse = call(op, logits, bias, 8, "sigmoid", 1, 1)
    assert torch.equal(w, we) and torch.equal(ids, idse)
    assert not torch.equal(ids, ids0)
