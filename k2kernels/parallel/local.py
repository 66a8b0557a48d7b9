"""The local expert computation that both TP and EP forwards call: THE ONE PLACE to swap in the
fused_moe op (issue 7).

Both names are k2kernels.moe_layer's own steps (moe_forward = route + experts_forward), so TP/EP on
the full weights reproduce moe_forward bit for bit (tested); `local_experts` takes an `expert_map`
(EP: pairs whose expert is not on this rank contribute nothing) and routing done by the caller (EP
routes on the source rank, computes on the owner).
"""
from __future__ import annotations

from ..moe_layer import experts_forward as local_experts
from ..moe_layer import route

__all__ = ["local_experts", "route"]
