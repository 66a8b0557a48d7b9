"""Every op: schema defined, opcheck (schema, fake, autograd registration, AOT dispatch), runs under
torch.compile(fullgraph=True), and rejects bad input with a ValueError naming the tensor.
Runs on CPU (references) everywhere and on CUDA (kernels or fallbacks) where a GPU exists."""
import pytest
import torch

import k2kernels
from k2kernels import _registry

from inputs import ALL

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _device_param(dev):
    return pytest.param(dev, marks=pytest.mark.gpu) if dev == "cuda" else dev


def test_every_schema_in_torch_bindings_is_an_op():
    assert set(_registry.OPS) >= {"moe_gemm", "topk_router", "moe_align", "quantize_nvfp4", "kv_cache_append",
                                  "fp8_kv_attention"}
    for op in _registry.OPS:
        assert hasattr(torch.ops.k2kernels, op), op
    assert set(ALL) >= set(_registry.OPS) - {op for op in _registry.OPS if op.startswith("moe_gemm_w4a4")}


def _bytes(t):
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def opcheck(op, args):
    """torch.library.opcheck, except that its schema test (SchemaCheckMode) cannot compare float8
    tensors (allclose is not implemented for them in torch 2.14); for ops with float8 inputs we run
    the other checks and test the schema's mutation annotations ourselves, byte for byte."""
    overload = getattr(torch.ops.k2kernels, op).default
    if not any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in args):
        torch.library.opcheck(overload, args)
        return
    torch.library.opcheck(overload, args, test_utils=("test_autograd_registration", "test_faketensor",
                                                      "test_aot_dispatch_dynamic"))
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    overload(*args)
    for arg_schema, a, b in zip(overload._schema.arguments, args, before):
        if not isinstance(a, torch.Tensor):
            continue
        mutable = arg_schema.alias_info is not None and arg_schema.alias_info.is_write
        changed = not torch.equal(_bytes(a), _bytes(b))
        assert not changed or mutable, f"{op} mutated {arg_schema.name}, which its schema does not mark (a!)"


@pytest.mark.parametrize("device", [_device_param(d) for d in DEVICES])
@pytest.mark.parametrize("op", sorted(ALL))
def test_opcheck(op, device):
    opcheck(op, ALL[op](device=device))


@pytest.mark.parametrize("device", [_device_param(d) for d in DEVICES])
def test_latent_variants_opcheck(device):
    opcheck("kv_cache_append", ALL["kv_cache_append"](device=device, latent=True))
    opcheck("fp8_kv_attention", ALL["fp8_kv_attention"](device=device, latent=True))
    opcheck("fp8_kv_attention_lse", ALL["fp8_kv_attention_lse"](device=device, latent=True, window_left=2))


@pytest.mark.parametrize("device", [_device_param(d) for d in DEVICES])
@pytest.mark.parametrize("op", ["moe_gemm", "topk_router", "moe_align", "quantize_nvfp4", "fp8_kv_attention"])
def test_compile_fullgraph_matches_eager(op, device):
    torch._dynamo.reset()      # the lambda below is one code object: earlier cases would count as recompiles
    args = ALL[op](device=device)
    f = getattr(torch.ops.k2kernels, op)
    eager = f(*args)
    compiled = torch.compile(lambda *a: f(*a), fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")(*args)
    eager = eager if isinstance(eager, tuple) else (eager,)
    compiled = compiled if isinstance(compiled, tuple) else (compiled,)
    for e, c in zip(eager, compiled):
        assert torch.equal(_bytes(e), _bytes(c))


def test_moe_gemm_nvfp4_act_runs():
    out = torch.ops.k2kernels.moe_gemm(*ALL["moe_gemm"](act="nvfp4"))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---- bad input: ValueError that names the tensor and what was expected -----------------------------

def _replace(args, i, value):
    args = list(args)
    args[i] = value
    return tuple(args)


BAD = [
    ("moe_gemm", 0, lambda a: a.float(), "a must be bfloat16 [M, K]"),
    ("moe_gemm", 1, lambda w: w.view(torch.int8), "w must be uint8 [E, N, K/2]"),
    ("moe_gemm", 2, lambda s: s[:, :, :2].contiguous(), "w_scale must be float8_e4m3fn"),
    ("moe_gemm", 3, lambda al: al[:1].contiguous(), "w_alpha must be float32"),
    ("moe_gemm", 4, lambda o: o.long(), "expert_offsets must be int32"),
    ("moe_gemm", 5, lambda _: "fp8", "act must be one of"),
    ("moe_gemm", 0, lambda a: a.t().contiguous().t(), "a must be contiguous"),
    ("topk_router", 0, lambda x: x.half(), "logits must be float32/bfloat16 [T, E]"),
    ("topk_router", 1, lambda b: b[:3].contiguous(), "bias must be float32"),
    ("topk_router", 2, lambda _: 17, "top_k must be in"),
    ("topk_router", 3, lambda _: "relu", "scoring must be one of"),
    ("moe_align", 0, lambda x: x.float(), "ids must be int32/int64 [T, k]"),
    ("quantize_nvfp4", 0, lambda x: x[:, :40].contiguous(), "x must have K % 16 == 0"),
    ("quantize_nvfp4", 1, lambda s: torch.ones(3), "global_scale must be float32 [] or [1]"),
    ("kv_cache_append", 2, lambda c: c.float(), "k_cache must be float8_e4m3fn"),
    ("kv_cache_append", 4, lambda s: s.int(), "slot_mapping must be int64"),
    ("fp8_kv_attention", 0, lambda q: q[:, :3].contiguous(), "H_q = 3 must be a multiple of H_kv"),
    ("fp8_kv_attention", 4, lambda s: s.long(), "seq_lens must be int32"),
    ("fp8_kv_attention", 12, lambda _: -2, "window_left must be an int >= -1"),
]


@pytest.mark.parametrize("device", [_device_param(d) for d in DEVICES])
@pytest.mark.parametrize("op,index,mutate,message", BAD, ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
def test_bad_input_is_a_clear_value_error(op, index, mutate, message, device):
    args = ALL[op](device=device)
    bad = _replace(args, index, mutate(args[index]))
    with pytest.raises(ValueError, match=rf"k2kernels\.{op}: .*{message.split('[')[0].strip()}"):
        getattr(torch.ops.k2kernels, op)(*bad)


def test_reference_rejects_bad_offsets():
    args = ALL["moe_gemm"]()
    offsets = args[4].clone()
    offsets[1] = 100
    with pytest.raises(ValueError, match="expert_offsets must start at 0, be non-decreasing"):
        torch.ops.k2kernels.moe_gemm(*_replace(args, 4, offsets))


def test_wrappers_take_python_float_scales():
    x = torch.randn(2, 32).to(torch.bfloat16)
    q1, s1 = k2kernels.quantize_nvfp4(x, 0.05)
    q2, s2 = torch.ops.k2kernels.quantize_nvfp4(x, torch.tensor(0.05))
    assert torch.equal(q1, q2) and torch.equal(s1.view(torch.uint8), s2.view(torch.uint8))
