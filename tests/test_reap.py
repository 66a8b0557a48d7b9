"""REAP pruning on synthetic MoE layers where the experts to drop are known by construction."""
import pytest
import torch

from k2kernels.reap import (ReapAccumulator, expert_forward, moe_forward, reap_prune, route,
                            select_experts)

E, H, I, T, TOP_K = 16, 64, 32, 512, 4


def make_layer(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(E, H, generator=g) / H ** 0.5
    w13 = torch.randn(E, 2 * I, H, generator=g) / H ** 0.5
    w2 = torch.randn(E, H, I, generator=g) / I ** 0.5
    x = torch.randn(T, H, generator=g)
    return x.to(dtype), gate.to(dtype), w13.to(dtype), w2.to(dtype)


def brute_force_scores(x, gate, w13, w2, top_k, scoring, bias=None):
    """Independent formula: every expert on every token, masked by the routing."""
    w, ids = route(x, gate, top_k, scoring, bias)
    dense_w = torch.zeros(x.shape[0], E).scatter(1, ids, w)        # 0 where not routed
    routed = torch.zeros(x.shape[0], E, dtype=torch.bool).scatter(1, ids, True)
    norms = torch.stack([expert_forward(x, w13[e], w2[e]).norm(dim=-1) for e in range(E)], 1)
    count = routed.sum(0)
    return (dense_w * norms).sum(0).double() / count.clamp_min(1), count


@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_scores_match_brute_force(scoring):
    x, gate, w13, w2 = make_layer(1)
    res = reap_prune(x, gate, w13, w2, n_keep=E, top_k=TOP_K, scoring=scoring)
    ref, count = brute_force_scores(x, gate, w13, w2, TOP_K, scoring)
    assert torch.equal(res.counts, count)
    torch.testing.assert_close(res.scores, ref, rtol=1e-5, atol=1e-7)   # fp32 sums in two orders
    assert int(res.counts.sum()) == T * TOP_K


def test_near_zero_experts_are_dropped():
    x, gate, w13, w2 = make_layer(2)
    weak = [3, 7, 11]
    w2[weak] *= 1e-3        # routed as often as the rest, but outputs ~1000x smaller
    res = reap_prune(x, gate, w13, w2, n_keep=E - len(weak), top_k=TOP_K)
    assert (res.counts[weak] > 0).all(), "the weak experts must be routed, so only the norm drops them"
    assert set(res.kept.tolist()) == set(range(E)) - set(weak)
    assert res.kept.tolist() == sorted(res.kept.tolist())
    assert res.w13.shape == (E - 3, 2 * I, H) and res.w2.shape == (E - 3, H, I)
    for new, old in enumerate(res.kept.tolist()):
        assert torch.equal(res.w13[new], w13[old]) and torch.equal(res.w2[new], w2[old])
        assert torch.equal(res.gate_weight[new], gate[old])


def test_score_is_linear_in_output_norm():
    """Scaling an expert's down projection by c leaves routing alone and scales only its score."""
    x, gate, w13, w2 = make_layer(3)
    base = reap_prune(x, gate, w13, w2, n_keep=E, top_k=TOP_K)
    w2b = w2.clone()
    w2b[5] *= 3.0
    scaled = reap_prune(x, gate, w13, w2b, n_keep=E, top_k=TOP_K)
    assert torch.equal(base.counts, scaled.counts)
    others = [e for e in range(E) if e != 5]
    torch.testing.assert_close(scaled.scores[others], base.scores[others])
    torch.testing.assert_close(scaled.scores[5], 3.0 * base.scores[5], rtol=1e-5, atol=0)


def test_never_routed_experts_drop_and_pruned_layer_is_exact():
    """With the correction bias pushing experts out of every top-k, they score 0, are dropped,
    and the pruned layer computes exactly what the full one did."""
    x, gate, w13, w2 = make_layer(4)
    bias = torch.zeros(E)
    dead = [0, 9]
    bias[dead] = -10.0      # sigmoid scores lie in (0, 1): s - 10 never beats another expert
    res = reap_prune(x, gate, w13, w2, n_keep=E - 2, top_k=TOP_K, bias=bias)
    assert res.counts[dead].tolist() == [0, 0] and res.scores[dead].tolist() == [0.0, 0.0]
    assert set(res.kept.tolist()) == set(range(E)) - set(dead)
    assert torch.equal(res.bias, bias[res.kept])
    full = moe_forward(x, gate, w13, w2, TOP_K, bias=bias, routed_scaling_factor=2.827)
    pruned = moe_forward(x, res.gate_weight, res.w13, res.w2, TOP_K, bias=res.bias,
                         routed_scaling_factor=2.827)
    torch.testing.assert_close(pruned, full, rtol=0, atol=1e-6)


def test_softmax_never_routed_and_renormalised_output_unchanged():
    """Softmax's denominator changes when experts go, but renormalised top-k weights do not."""
    x, gate, w13, w2 = make_layer(5)
    u = torch.randn(H)
    u /= u.norm()
    x = x + 4 * u           # every token has a positive component along u
    dead = [2, 13]
    gate[dead] = -3.0 * u   # logits of the dead experts sit far below everyone else's
    res = reap_prune(x, gate, w13, w2, n_keep=E - 2, top_k=TOP_K, scoring="softmax")
    assert res.counts[dead].tolist() == [0, 0]
    assert set(res.kept.tolist()) == set(range(E)) - set(dead)
    full = moe_forward(x, gate, w13, w2, TOP_K, scoring="softmax")
    pruned = moe_forward(x, res.gate_weight, res.w13, res.w2, TOP_K, scoring="softmax")
    torch.testing.assert_close(pruned, full, rtol=1e-5, atol=1e-6)


def test_batches_accumulate_like_one():
    x, gate, w13, w2 = make_layer(6)
    one = reap_prune(x, gate, w13, w2, n_keep=8, top_k=TOP_K)
    two = reap_prune([x[:200], x[200:].reshape(2, -1, H)], gate, w13, w2, n_keep=8, top_k=TOP_K)
    assert torch.equal(one.counts, two.counts) and torch.equal(one.kept, two.kept)
    torch.testing.assert_close(one.scores, two.scores, rtol=1e-6, atol=1e-9)


def test_bf16_weights():
    x, gate, w13, w2 = make_layer(7, torch.bfloat16)
    w2[[1, 6]] *= 1e-3
    res = reap_prune(x, gate, w13, w2, n_keep=E - 2, top_k=TOP_K)
    assert set(res.kept.tolist()) == set(range(E)) - {1, 6}
    assert res.w13.dtype == torch.bfloat16


def test_select_ties_keep_lower_index():
    assert select_experts(torch.tensor([1.0, 2.0, 2.0, 0.0, 2.0]), 2).tolist() == [1, 2]


def test_errors_say_what_is_wrong():
    x, gate, w13, w2 = make_layer(8)
    with pytest.raises(ValueError, match="w2 must be"):
        reap_prune(x, gate, w13, w2[:, :, :-1], n_keep=4, top_k=TOP_K)
    with pytest.raises(ValueError, match="n_keep"):
        reap_prune(x, gate, w13, w2, n_keep=E + 1, top_k=TOP_K)
    with pytest.raises(ValueError, match="scoring"):
        ReapAccumulator(gate, w13, w2, TOP_K, scoring="relu").update(x)
    with pytest.raises(ValueError, match="hidden must end"):
        ReapAccumulator(gate, w13, w2, TOP_K).update(x[:, :-1])
