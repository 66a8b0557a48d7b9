"""Multi-GPU MoE over torch.distributed: tensor parallelism (TP) and expert parallelism (EP).

NCCL on GPUs, gloo on CPU (the tests). See docs/parallel.md.

    from k2kernels.parallel import shard_tp_layer, tp_moe_forward, EPLayer, ep_moe_forward
    out = tp_moe_forward(shard_tp_layer(layer, rank, world), x)          # x replicated
    out = ep_moe_forward(EPLayer.from_layer(layer, rank, world), x_mine) # x per rank
"""
from .ep import MODES, EPLayer, ep_moe_forward
from .local import local_experts, route
from .sharding import (ep_owner, expert_map, shard_down, shard_ep, shard_gate_up, shard_tp,
                       shard_tp_layer, swizzled_col_slice, swizzled_row_slice, tp_slice)
from .tp import tp_moe_forward

__all__ = ["EPLayer", "MODES", "ep_moe_forward", "ep_owner", "expert_map", "local_experts", "route",
           "shard_down", "shard_ep", "shard_gate_up", "shard_tp", "shard_tp_layer", "swizzled_col_slice",
           "swizzled_row_slice", "tp_moe_forward", "tp_slice"]
