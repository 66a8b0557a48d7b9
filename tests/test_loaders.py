"""Checkpoint loaders: names, reciprocal global scales, [gate; up] order, gate/up scale unification."""
import pytest
import torch

from k2kernels import loaders, nvfp4

E, H, I = 3, 64, 32


def _expert_tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    gate, up, down = (torch.randn(E, I, H, generator=g), torch.randn(E, I, H, generator=g) * 3,
                      torch.randn(E, H, I, generator=g))
    return gate, up, down


def _per_expert_sd(reciprocal: bool, names, same_ws2=False):
    gate, up, down = _expert_tensors()
    sd, prefix = {}, "model.layers.1.mlp."
    weight, scale, wgs, igs = names
    for e in range(E):
        for proj, w in (("gate_proj", gate[e]), ("up_proj", up[e]), ("down_proj", down[e])):
            ws2 = nvfp4.weight_global_scale(w if not same_ws2 or proj == "down_proj" else torch.stack([gate[e], up[e]]).reshape(-1, H))
            q, s = nvfp4.quantize_blocks(w, ws2)
            base = f"{prefix}experts.{e}.{proj}."
            sd[base + weight], sd[base + scale] = q, s
            sd[base + wgs] = 1 / ws2 if reciprocal else ws2
            ins = torch.tensor(0.5 + e)
            sd[base + igs] = 1 / ins if reciprocal else ins
    return sd, prefix, (gate, up, down)


@pytest.mark.parametrize("fmt", ["modelopt", "compressed_tensors"])
def test_per_expert_loaders_dequantize_to_the_original(fmt):
    names = (("weight", "weight_scale", "weight_scale_2", "input_scale") if fmt == "modelopt"
             else ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale"))
    sd, prefix, (gate, up, down) = _per_expert_sd(fmt != "modelopt", names)
    with pytest.warns(RuntimeWarning, match="different weight_scale_2"):
        w = getattr(loaders, f"from_{fmt}")(sd, prefix, E)
    assert w.w13.shape == (E, 2 * I, H // 2) and w.w2.shape == (E, H, I // 2)
    deq13 = nvfp4.dequantize(w.w13, w.w13_scale, w.w13_alpha)
    ref13 = torch.cat([gate, up], dim=1)               # rows [gate; up]
    # gate rows: their scales were rescaled to up's larger alpha and re-rounded; error stays NVFP4-sized
    assert ((deq13 - ref13).norm() / ref13.norm()) < 0.15
    assert ((deq13[:, :I] - gate).norm() / gate.norm()) < 0.2           # gate really is first
    assert ((deq13[:, I:] - up).norm() / up.norm()) < 0.15
    # down loads without rescaling: exactly the checkpoint's ws2 (reciprocal undone)
    expected_ws2 = torch.stack([nvfp4.weight_global_scale(down[e]) for e in range(E)])
    assert torch.allclose(w.w2_alpha, expected_ws2, rtol=1e-6)
    assert torch.allclose(w.w2_input_scale, torch.tensor([0.5, 1.5, 2.5]), rtol=1e-6)


def test_equal_gate_up_scales_load_bit_exactly():
    names = ("weight", "weight_scale", "weight_scale_2", "input_scale")
    sd, prefix, _ = _per_expert_sd(False, names, same_ws2=True)
    w = loaders.from_modelopt(sd, prefix, E)
    for e in range(E):
        assert torch.equal(w.w13[e, :I], sd[f"{prefix}experts.{e}.gate_proj.weight"])
        assert torch.equal(w.w13_scale[e, I:].view(torch.uint8), sd[f"{prefix}experts.{e}.up_proj.weight_scale"].view(torch.uint8))


def test_vllm_fused_names_and_errors():
    gate, up, down = _expert_tensors()
    w = loaders.quantize_moe(torch.cat([gate, up], 1), down, input_scale=0.25)
    sd = {"w13_weight": w.w13, "w13_weight_scale": w.w13_scale, "w13_weight_scale_2": w.w13_alpha,
          "w13_input_scale": w.w13_input_scale, "w2_weight": w.w2, "w2_weight_scale": w.w2_scale,
          "w2_weight_scale_2": w.w2_alpha, "w2_input_scale": w.w2_input_scale}
    back = loaders.from_vllm(sd)
    assert torch.equal(back.w13, w.w13) and torch.equal(back.w2_alpha, w.w2_alpha)
    del sd["w2_weight_scale"]
    with pytest.raises(KeyError, match="w2_weight_scale"):
        loaders.from_vllm(sd)
    bad = dict(sd, w2_weight_scale=w.w2_scale.float())
    with pytest.raises(ValueError, match="w2_scale must be float8_e4m3fn"):
        loaders.from_vllm(bad)
