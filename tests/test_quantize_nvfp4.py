"""quantize_nvfp4 (activation BF16 -> NVFP4): CUDA kernel bit-exact vs the reference."""
import math

import pytest
import torch

from k2kernels import nvfp4, reference

from tolerances import EXACT


def _bytes(t):
    return t.view(torch.uint8)


def _edge_rows(K=64):
    """Rows that hit every rounding tie, zeros, saturation, subnormal scales and non-finite values."""
    rows = []
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -6.0])
    rows.append(ties.repeat(K // 16))                     # global scale 1 -> scale e4m3(1) = 1: x/1 are exact ties
    rows.append(torch.zeros(K))                            # zero blocks
    rows.append(torch.full((K,), 1e30))                    # saturates the e4m3 scale at 448
    rows.append(torch.full((K,), 1e-7) * torch.arange(1, K + 1))   # subnormal e4m3 scales
    nan_row = torch.randn(K)
    nan_row[3] = float("nan")
    nan_row[40] = float("inf")
    rows.append(nan_row)
    rows.append(-torch.zeros(K))                           # negative zeros
    return torch.stack(rows)


def test_reference_matches_scalar_rule():
    """The vectorized reference against a per-element Python loop of the documented rule."""
    x = torch.randn(3, 32).to(torch.bfloat16)
    gs = torch.tensor(0.013)
    packed, scale = reference.quantize_nvfp4(x, gs)
    codes = nvfp4.unpack_e2m1(packed)
    grid = [0, .5, 1, 1.5, 2, 3, 4, 6]
    for r in range(3):
        for b in range(2):
            blk = x[r, 16 * b:16 * (b + 1)].float()
            s = torch.tensor(blk.abs().max().item() / (6 * 0.013), dtype=torch.float32)
            s8 = nvfp4.e4m3_satfinite(s).float().item()
            assert scale[r, b].float().item() == s8
            for i in range(16):
                v = (blk[i] / torch.tensor(s8 * 0.013, dtype=torch.float32)).item()
                mag = min(range(8), key=lambda j: (abs(abs(v) - grid[j]), j % 2))   # nearest, tie -> even
                want = mag | (8 if math.copysign(1.0, v) < 0 else 0)
                assert codes[r, 16 * b + i].item() == want, (v, want)


@pytest.mark.gpu
@pytest.mark.parametrize("M,K", [(1, 16), (7, 7168), (128, 2048), (333, 512)])
def test_kernel_bit_exact_random(M, K):
    x = (torch.randn(M, K) * 3).to(torch.bfloat16)
    gs = torch.tensor(x.float().abs().max().item() / (6 * 448))
    ref_q, ref_s = reference.quantize_nvfp4(x, gs)
    q, s = torch.ops.k2kernels.quantize_nvfp4(x.cuda(), gs.cuda())
    assert (q.cpu() != ref_q).sum().item() == EXACT
    assert (_bytes(s.cpu()) != _bytes(ref_s)).sum().item() == EXACT


@pytest.mark.gpu
@pytest.mark.parametrize("gs", [1.0, 0.37, 1e-3])
def test_kernel_bit_exact_edges(gs):
    x = _edge_rows().to(torch.bfloat16)
    g = torch.tensor(gs)
    ref_q, ref_s = reference.quantize_nvfp4(x, g)
    q, s = torch.ops.k2kernels.quantize_nvfp4(x.cuda(), g.cuda())
    assert torch.equal(q.cpu(), ref_q)
    assert torch.equal(_bytes(s.cpu()), _bytes(ref_s))


@pytest.mark.gpu
def test_kernel_graph_replay_equals_eager():
    x = torch.randn(64, 1024, device="cuda").to(torch.bfloat16)
    gs = torch.tensor(0.01, device="cuda")
    q0, s0 = torch.ops.k2kernels.quantize_nvfp4(x, gs)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        q1, s1 = torch.ops.k2kernels.quantize_nvfp4(x, gs)
    q1.fill_(0xFF)          # poison: replay must overwrite everything
    s1.view(torch.uint8).fill_(0xFF)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(q0, q1) and torch.equal(_bytes(s0), _bytes(s1))


@pytest.mark.gpu
def test_kernel_is_registered_not_fallback():
    import k2kernels
    report = k2kernels.load_kernels()
    assert report["quantize_nvfp4"] == "cuda kernel", report
