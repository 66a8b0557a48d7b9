"""kv_cache_append: paged FP8 cache writes, CUDA kernel bit-exact vs the reference."""
import pytest
import torch

from k2kernels import reference

from inputs import kv_cache_append_args


def _bytes(t):
    return t.view(torch.uint8)


def test_reference_writes_expected_bytes():
    k, v, kc, vc, slots, ks, vs = kv_cache_append_args(T=4, H=2, D=8, pages=2, page_size=4)
    slots = torch.tensor([5, -1, 0, 7])
    reference.kv_cache_append(k, v, kc, vc, slots, ks, vs)
    for t, s in [(0, 5), (2, 0), (3, 7)]:
        page, off = divmod(s, 4)
        want = (k[t].float() / ks).clamp(-448, 448).to(torch.float8_e4m3fn)
        assert torch.equal(_bytes(kc[page, off]), _bytes(want))
        want_v = (v[t].float() / vs.reshape(-1, 1)).clamp(-448, 448).to(torch.float8_e4m3fn)
        assert torch.equal(_bytes(vc[page, off]), _bytes(want_v))
    # token 1 (slot -1) wrote nothing: slots 1..4 and 6 of the cache stay zero
    written = {5, 0, 7}
    for s in range(8):
        if s not in written:
            assert (_bytes(kc.reshape(8, -1)[s]) == 0).all()


def test_saturates_instead_of_nan():
    k, v, kc, vc, slots, ks, vs = kv_cache_append_args(T=2, H=1, D=8)
    k[0, 0, 0] = 1e4    # / 0.05 = 2e5 >> 448
    reference.kv_cache_append(k, v, kc, vc, slots, ks, vs)
    s = slots[0].item()
    assert kc.reshape(-1, 8)[s, 0].float().item() == 448.0


@pytest.mark.gpu
@pytest.mark.parametrize("H,D,page_size,per_head,latent", [
    (8, 128, 16, False, False), (8, 128, 64, True, False), (1, 576, 64, False, True), (2, 36, 16, True, False),
])
def test_kernel_bit_exact(H, D, page_size, per_head, latent):
    T, pages = 37, 8
    k, v, kc, vc, slots, ks, vs = kv_cache_append_args(T=T, H=H, D=D, pages=pages, page_size=page_size, latent=latent)
    k = k * 40       # exercise saturation
    if per_head:
        ks = torch.rand(H) * 0.1 + 0.01
        vs = None if latent else torch.rand(H) * 0.1 + 0.01
    slots[5] = -1
    kc.view(torch.uint8).fill_(0x7F)            # poison: NaN bytes everywhere
    if vc is not None:
        vc.view(torch.uint8).fill_(0x7F)
    ref_kc, ref_vc = kc.clone(), None if vc is None else vc.clone()
    reference.kv_cache_append(k, v, ref_kc, ref_vc, slots, ks, vs)
    cu = lambda t: None if t is None else t.cuda()
    g_kc, g_vc = kc.cuda(), cu(vc)
    torch.ops.k2kernels.kv_cache_append(k.cuda(), cu(v), g_kc, g_vc, slots.cuda(), ks.cuda(), cu(vs))
    assert torch.equal(_bytes(g_kc.cpu()), _bytes(ref_kc))
    if vc is not None:
        assert torch.equal(_bytes(g_vc.cpu()), _bytes(ref_vc))


@pytest.mark.gpu
def test_kernel_skips_out_of_range_slots():
    k, v, kc, vc, slots, ks, vs = kv_cache_append_args(device="cuda", T=3, H=1, D=16, pages=2, page_size=4)
    slots = torch.tensor([0, 10_000, -5], device="cuda")      # only slot 0 is valid
    kc.view(torch.uint8).fill_(0x11)
    torch.ops.k2kernels.kv_cache_append(k, v, kc, vc, slots, ks, vs)
    torch.cuda.synchronize()
    assert (kc.view(torch.uint8).reshape(8, -1)[1:] == 0x11).all()
    assert not (kc.view(torch.uint8).reshape(8, -1)[0] == 0x11).all()


@pytest.mark.gpu
def test_kernel_graph_capture():
    k, v, kc, vc, slots, ks, vs = kv_cache_append_args(device="cuda", T=16, H=8, D=128, pages=4, page_size=16)
    torch.ops.k2kernels.kv_cache_append(k, v, kc, vc, slots, ks, vs)
    want = kc.clone()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        torch.ops.k2kernels.kv_cache_append(k, v, kc, vc, slots, ks, vs)
    kc.view(torch.uint8).fill_(0)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(_bytes(kc), _bytes(want))
