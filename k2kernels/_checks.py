"""Input validation shared by the references and the fakes, so every path raises the same
ValueError naming the op, the tensor and what was expected (the CUDA launchers mirror these
messages with TORCH_CHECK_VALUE)."""
from __future__ import annotations

from typing import Iterable, Optional

import torch


def _desc(t: torch.Tensor) -> str:
    return f"{str(t.dtype).replace('torch.', '')} {list(t.shape)}"


def fail(op: str, msg: str):
    raise ValueError(f"k2kernels.{op}: {msg}")


def check_tensor(op: str, name: str, t: Optional[torch.Tensor], *, dtypes: Iterable[torch.dtype],
                 dim: Optional[int] = None, expected: str = "", contiguous: bool = True) -> None:
    """dtype / rank / contiguity check with a message that shows what was expected and what came."""
    if t is None:
        fail(op, f"{name} must be a tensor; got None")
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a tensor; got {type(t).__name__}")
    dtypes = tuple(dtypes)
    what = expected or f"{'/'.join(str(d).replace('torch.', '') for d in dtypes)}"
    if t.dtype not in dtypes or (dim is not None and t.dim() != dim):
        fail(op, f"{name} must be {what}; got {_desc(t)}")
    if contiguous and not t.is_contiguous():
        fail(op, f"{name} must be contiguous; got strides {list(t.stride())} for shape {list(t.shape)}")


def check_same_device(op: str, **tensors) -> None:
    devs = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devs.values())) > 1:
        fail(op, "all tensors must be on one device; got " + ", ".join(f"{n} on {d}" for n, d in devs.items()))


def check_scale(op: str, name: str, t: Optional[torch.Tensor], count: Optional[int] = None) -> None:
    """A scale is an fp32 tensor of shape [] (or [1]), or [count] when per-head/per-expert is allowed."""
    check_tensor(op, name, t, dtypes=(torch.float32,), expected="float32 [] or [1]"
                 + (f" or [{count}]" if count else ""))
    ok = t.numel() == 1 and t.dim() <= 1
    if count is not None:
        ok = ok or (t.dim() == 1 and t.numel() == count)
    if not ok:
        fail(op, f"{name} must be float32 [] or [1]" + (f" or [{count}]" if count else "")
             + f"; got {_desc(t)}")
