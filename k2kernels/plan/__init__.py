"""Deployment planner for Kimi-K2-class MoE models (no torch; see docs/planner.md).

    python -m k2kernels.plan --model k2.6 --gpu rtx-pro-6000 --gpus 4 --experts 256
"""
from .memory import Parallelism, expert_bytes, kv_bytes_per_token, model_params, per_gpu_memory
from .planner import PlanRequest, evaluate, make_plan
from .presets import GPUS, MODELS, WEIGHT_BITS

__all__ = ["GPUS", "MODELS", "WEIGHT_BITS", "Parallelism", "PlanRequest", "evaluate", "expert_bytes",
           "kv_bytes_per_token", "make_plan", "model_params", "per_gpu_memory"]
