"""Parameter counts and per-GPU memory of a Kimi-K2-class model under TP, TP x PP and EP.

First principles only: every byte comes from a matrix shape times bits per element
(presets.WEIGHT_BITS), so a reader can redo any number by hand. Units: bytes in, GB out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

from .presets import GB, KV_BYTES, WEIGHT_BITS, ModelPreset

BF16_BITS = 16


@dataclass(frozen=True)
class Parallelism:
    tp: int = 1
    pp: int = 1
    ep: int = 1   # 1, or == tp: experts partitioned over the TP group (vLLM --enable-expert-parallel)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def label(self) -> str:
        if self.ep > 1:
            return f"EP{self.ep}" + (f"xPP{self.pp}" if self.pp > 1 else "") + f" (attn TP{self.tp})"
        return f"TP{self.tp}" + (f"xPP{self.pp}" if self.pp > 1 else "")

    def check(self) -> None:
        if min(self.tp, self.pp, self.ep) < 1:
            raise ValueError(f"tp, pp, ep must be >= 1; got {self}")
        if self.ep not in (1, self.tp):
            raise ValueError(f"ep must be 1 or equal to tp (experts split over the TP group); got {self}")


# ---- parameter counts (elements) -------------------------------------------------------------

def expert_params(m: ModelPreset) -> int:
    """One routed expert in one layer: gate and up [I, H] plus down [H, I]."""
    return 3 * m.hidden * m.moe_inter


def expert_bytes(m: ModelPreset, weights: str) -> float:
    """One routed expert, one layer, incl. block scales (24 772 608 B for NVFP4 at 7168/2048)."""
    return expert_params(m) * WEIGHT_BITS[weights] / 8


def attention_params(m: ModelPreset) -> tuple[int, int]:
    """(split-by-TP params, replicated-per-rank params) of one attention block.

    MLA: vLLM keeps q_a_proj and kv_a_proj_with_mqa replicated (ReplicatedLinear); q_b, kv_b and
    o_proj are split over heads. GQA: everything split (K/V replication for kv_heads < tp is
    handled in per_gpu_memory)."""
    h = m.hidden
    if m.attention == "mla":
        q_b = m.q_lora * m.q_heads * (m.qk_nope + m.qk_rope)
        kv_b = m.kv_lora * m.q_heads * (m.qk_nope + m.v_head)
        o = m.q_heads * m.v_head * h
        q_a = h * m.q_lora
        kv_a = h * (m.kv_lora + m.qk_rope)
        return q_b + kv_b + o, q_a + kv_a
    q = h * m.q_heads * m.head_dim
    kv = 2 * h * m.kv_heads * m.head_dim
    o = m.q_heads * m.head_dim * h
    return q + kv + o, 0


def attention_params_per_rank(m: ModelPreset, tp: int) -> float:
    """Attention weights one TP rank holds per layer (elements)."""
    split, replicated = attention_params(m)
    if m.attention == "gqa":   # K/V split by heads; with tp > kv_heads each rank keeps one head
        kv_full = 2 * m.hidden * m.kv_heads * m.head_dim
        return (split - kv_full) / tp + 2 * m.hidden * math.ceil(m.kv_heads / tp) * m.head_dim
    return split / tp + replicated


def norm_params_per_layer(m: ModelPreset) -> int:
    extra = (m.q_lora + m.kv_lora) if m.attention == "mla" else 0
    return 2 * m.hidden + extra


def model_params(m: ModelPreset, experts: int | None = None) -> dict[str, int]:
    """Total parameter counts by component (elements, not bytes)."""
    e = m.experts if experts is None else experts
    attn_split, attn_rep = attention_params(m)
    out = {
        "routed_experts": m.moe_layers * e * expert_params(m),
        "shared_experts": m.moe_layers * m.shared_experts * expert_params(m),
        "dense_mlp": m.first_dense_layers * 3 * m.hidden * m.dense_inter,
        "attention": m.layers * (attn_split + attn_rep),
        "router": m.moe_layers * e * m.hidden,
        "embeddings": m.vocab * m.hidden * (1 if m.tied_embeddings else 2),
        "norms": m.layers * norm_params_per_layer(m) + m.hidden,
    }
    out["total"] = sum(out.values())
    return out


def active_params(m: ModelPreset) -> int:
    """Parameters touched per token (top_k routed + everything dense; embedding = 1 row)."""
    p = model_params(m)
    return (p["total"] - p["routed_experts"] + m.moe_layers * m.top_k * expert_params(m)
            - m.vocab * m.hidden + m.hidden)


# ---- per-GPU memory --------------------------------------------------------------------------

def stage_layers(m: ModelPreset, pp: int) -> list[range]:
    """Contiguous layer ranges per pipeline stage; earlier stages take the remainder."""
    base, extra = divmod(m.layers, pp)
    out, start = [], 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out


def kv_bytes_per_token_per_layer(m: ModelPreset, kv: str, tp: int) -> float:
    """KV cache bytes one GPU holds per token per layer.

    MLA caches one latent (kv_lora + rope) per token, not per head, so every TP rank keeps a
    full copy (vLLM MLA behaviour). GQA splits KV heads over TP; if tp > kv_heads, heads are
    replicated so each rank still holds at least one."""
    b = KV_BYTES[kv]
    if m.attention == "mla":
        return (m.kv_lora + m.qk_rope) * b
    return 2 * math.ceil(m.kv_heads / tp) * m.head_dim * b


def kv_bytes_per_token(m: ModelPreset, kv: str) -> float:
    """Whole-model KV bytes per token on one un-split copy (tp=1)."""
    return m.layers * kv_bytes_per_token_per_layer(m, kv, 1)


def activation_bytes(m: ModelPreset, par: Parallelism, tokens: int, batch: int) -> float:
    """Peak activation workspace per GPU for `tokens` tokens in flight (a prefill chunk or the
    decode batch). Per token, in bf16: 4 H-wide buffers (residual, normed input, attention out,
    MoE out); attention q/k/v for this rank's heads; routed-expert rows top_k x (2I + I) / tp
    (gate_up output and SiLU*mul; with EP a GPU gets top_k/ep of the rows but whole experts, the
    same bytes); fused-MoE combine buffer top_k x H. Plus fp32 logits for the decode batch over
    this rank's vocabulary slice. A first-principles floor: real engines add allocator slack,
    which the fixed overhead is meant to cover."""
    heads = math.ceil(m.q_heads / par.tp)
    if m.attention == "mla":
        qkv = heads * (2 * (m.qk_nope + m.qk_rope) + m.v_head)
    else:
        qkv = heads * m.head_dim + 2 * math.ceil(m.kv_heads / par.tp) * m.head_dim
    per_token = 2 * (4 * m.hidden + qkv + m.top_k * 3 * m.moe_inter / par.tp + m.top_k * m.hidden)
    logits = batch * math.ceil(m.vocab / par.tp) * 4
    return tokens * per_token + logits


@dataclass
class StageMemory:
    stage: int
    layers: int
    moe_layers: int
    routed_experts_gb: float
    dense_gb: float           # attention + shared expert + dense MLP, at the dense precision
    embed_head_gb: float      # embedding table and/or lm_head slice
    router_norms_gb: float    # replicated small tensors
    kv_gb: float
    activations_gb: float
    overhead_gb: float
    total_gb: float
    capacity_gb: float
    margin_gb: float
    fits: bool
    kv_gb_per_1k_tokens: float
    max_kv_tokens: int        # context x batch tokens that fit next to everything else

    def as_dict(self) -> dict:
        return asdict(self)


def per_gpu_memory(m: ModelPreset, par: Parallelism, *, experts: int, weights: str, dense: str,
                   kv: str, context: int, batch: int, capacity_gb: float, overhead_gb: float,
                   prefill_chunk: int) -> list[StageMemory]:
    """Memory of one GPU in each pipeline stage (all GPUs of a stage are alike up to rounding)."""
    par.check()
    tp = par.tp
    attn_per_rank = attention_params_per_rank(m, tp)
    dense_b = WEIGHT_BITS[dense] / 8
    bf16_b = BF16_BITS / 8
    if par.ep > 1:   # whole experts, E/ep of them (rounded up: the fullest GPU decides the fit)
        experts_per_gpu_layer = math.ceil(experts / par.ep) * expert_bytes(m, weights)
    else:            # every expert, 1/tp of each
        experts_per_gpu_layer = experts * expert_bytes(m, weights) / tp
    kv_tok_layer = kv_bytes_per_token_per_layer(m, kv, tp)
    act = activation_bytes(m, par, max(prefill_chunk, batch), batch)

    out = []
    stages = stage_layers(m, par.pp)
    for s, rng in enumerate(stages):
        n_layers = len(rng)
        n_moe = sum(1 for i in rng if i >= m.first_dense_layers)
        n_dense = n_layers - n_moe
        routed = n_moe * experts_per_gpu_layer
        dense_w = (n_layers * attn_per_rank
                   + n_moe * m.shared_experts * expert_params(m) / tp
                   + n_dense * 3 * m.hidden * m.dense_inter / tp) * dense_b
        embed = 0.0
        if s == 0:
            embed += m.vocab * m.hidden / tp * bf16_b            # vocab-parallel embedding
        if s == len(stages) - 1 and not (m.tied_embeddings and s == 0):
            embed += m.vocab * m.hidden / tp * bf16_b            # lm_head
        small = (n_moe * (experts * m.hidden * bf16_b + experts * 4)   # router gate bf16 + fp32 bias
                 + n_layers * norm_params_per_layer(m) * bf16_b)
        kv_per_tok = n_layers * kv_tok_layer
        kv_total = kv_per_tok * context * batch
        fixed = routed + dense_w + embed + small + act + overhead_gb * GB
        total = fixed + kv_total
        room = capacity_gb * GB - fixed
        out.append(StageMemory(
            stage=s, layers=n_layers, moe_layers=n_moe,
            routed_experts_gb=routed / GB, dense_gb=dense_w / GB, embed_head_gb=embed / GB,
            router_norms_gb=small / GB, kv_gb=kv_total / GB, activations_gb=act / GB,
            overhead_gb=overhead_gb, total_gb=total / GB, capacity_gb=capacity_gb,
            margin_gb=(capacity_gb * GB - total) / GB, fits=total <= capacity_gb * GB,
            kv_gb_per_1k_tokens=kv_per_tok * 1000 / GB,
            max_kv_tokens=max(0, int(room // kv_per_tok)) if kv_per_tok else 0,
        ))
    return out
