"""The NVFP4 format module against hand-computed values (not only round trips)."""
import math

import pytest
import torch

from k2kernels import nvfp4


@pytest.mark.parametrize("x,code", [
    (0.0, 0), (0.25, 0), (0.2501, 1), (0.5, 1), (0.75, 2), (1.0, 2), (1.25, 2), (1.26, 3), (1.5, 3),
    (1.75, 4), (2.0, 4), (2.5, 4), (2.51, 5), (3.0, 5), (3.5, 6), (4.0, 6), (5.0, 6), (5.01, 7), (6.0, 7),
    (100.0, 7), (-0.5, 9), (-6.0, 15), (-0.0, 8), (float("nan"), 0),
])
def test_round_to_e2m1_hand_values(x, code):
    # Ties (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5) go to the even code; > 6 saturates to code 7.
    assert nvfp4.round_to_e2m1(torch.tensor([x])).item() == code


def test_e2m1_table_and_pack():
    codes = torch.arange(16, dtype=torch.uint8)
    vals = nvfp4.e2m1_to_float(codes)
    assert vals.tolist()[:8] == [0, .5, 1, 1.5, 2, 3, 4, 6]
    assert vals.tolist()[9:] == [-.5, -1, -1.5, -2, -3, -4, -6]
    # element 2i in the LOW nibble: codes (1, 2) -> 0x21
    packed = nvfp4.pack_e2m1(torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8))
    assert packed.tolist() == [[0x21, 0x0F]]
    assert nvfp4.unpack_e2m1(packed).tolist() == [[1, 2, 15, 0]]


def test_quantize_block_hand_computed():
    # amax 12 with global scale 0.5: block scale = e4m3(12 / (6 * 0.5)) = 4; step = 4 * 0.5 = 2.
    x = torch.tensor([[12.0, -6.0, 3.0, 1.0, 0.5, 2.5, 7.0, -12.0] + [0.0] * 8])
    packed, scale = nvfp4.quantize_blocks(x, torch.tensor(0.5))
    assert scale.float().tolist() == [[4.0]]
    # x / 2 = 6, -3, 1.5, 0.5, 0.25, 1.25, 3.5, -6 -> codes 7, 13, 3, 1, 0, 2, 6, 15
    codes = nvfp4.unpack_e2m1(packed)[0, :8].tolist()
    assert codes == [7, 13, 3, 1, 0, 2, 6, 15]
    deq = nvfp4.dequantize(packed, scale, torch.tensor(0.5))
    assert deq[0, :8].tolist() == [12.0, -6.0, 3.0, 1.0, 0.0, 2.0, 8.0, -12.0]


def test_quantize_scale_rounding_saturation_and_subnormal():
    # block scale 0.9 / (6 * 0.01) = 15 -> exactly 15 in e4m3; 1e6 saturates to 448 (not NaN as torch's cast)
    x = torch.zeros(3, 16)
    x[0, 0] = 0.9
    x[1, 0] = 1e6
    x[2, 0] = 6 * 2 ** -9 * 0.01     # smallest e4m3 subnormal scale (2^-9)
    _, scale = nvfp4.quantize_blocks(x, torch.tensor(0.01))
    s = scale.float().reshape(-1).tolist()
    assert s[0] == 15.0 and s[1] == 448.0
    assert math.isclose(s[2], 2 ** -9, rel_tol=0.01)


def test_nonfinite_block_gets_nan_scale_and_zero_codes():
    x = torch.ones(2, 16)
    x[0, 3] = float("nan")
    x[1, 5] = float("inf")
    packed, scale = nvfp4.quantize_blocks(x, torch.tensor(1.0))
    assert torch.isnan(scale.float()).all()
    assert (packed == 0).all()
    assert torch.isnan(nvfp4.dequantize(packed, scale, torch.tensor(1.0))).all()


def test_zero_block():
    packed, scale = nvfp4.quantize_blocks(torch.zeros(1, 32), torch.tensor(1.0))
    assert (scale.float() == 0).all() and (packed == 0).all()


def test_weight_global_scale_modelopt_rule():
    w = torch.randn(2, 8, 32)
    w[1] *= 10
    ws2 = nvfp4.weight_global_scale(w)
    assert torch.allclose(ws2, w.abs().amax(dim=(1, 2)) / (6 * 448))
    packed, scale, ws2b = nvfp4.quantize_weight(w)
    # the largest block of each expert gets scale 448 exactly, so codes reach +-6
    assert (scale.float().amax(dim=(1, 2)) == 448).all()
    deq = nvfp4.dequantize(packed, scale, ws2b)
    rel = (deq - w).norm() / w.norm()
    assert rel < 0.15   # NVFP4 on Gaussian data: ~8-10 % RMS error; a broken codec gives ~100 %


def test_swizzle_hand_positions():
    # 256 rows x 8 block-columns: two 128x4 tiles down, two across.
    R, KB = 256, 8
    lin = torch.arange(R * KB, dtype=torch.int32).reshape(R, KB)
    src = (lin % 251).to(torch.uint8).view(torch.float8_e4m3fn)
    sw = nvfp4.swizzle_scales(src).view(torch.uint8).reshape(-1)
    def at(r, c):
        return int((lin[r, c] % 251).item())
    # within a tile: offset = (r % 32) * 16 + ((r % 128) // 32) * 4 + (c % 4); tiles row-major (R/128, KB/4)
    assert sw[0].item() == at(0, 0)
    assert sw[1].item() == at(0, 1)
    assert sw[4].item() == at(32, 0)
    assert sw[16].item() == at(1, 0)
    assert sw[21].item() == at(33, 1)
    assert sw[512].item() == at(0, 4)            # second tile across
    assert sw[2 * 512 + 16 * 5 + 4 * 3 + 2].item() == at(128 + 96 + 5, 2)   # second tile down
    back = nvfp4.unswizzle_scales(nvfp4.swizzle_scales(src), R, KB)
    assert torch.equal(back.view(torch.uint8), src.view(torch.uint8))


def test_swizzle_pads_to_128_by_4():
    src = torch.rand(3, 130, 5).to(torch.float8_e4m3fn)
    sw = nvfp4.swizzle_scales(src)
    assert sw.shape == (3, 256, 8)
    assert torch.equal(nvfp4.unswizzle_scales(sw, 130, 5).view(torch.uint8), src.view(torch.uint8))
    # the padding is zeros: 256*8 - 130*5 zero bytes per expert beyond the data's own zeros
    assert (sw.view(torch.uint8) == 0).sum() >= 3 * (256 * 8 - 130 * 5)
