"""Model, GPU, weight-format and KV-format presets for the deployment planner.

Every number carries its source in a comment. "seed" means the project's seed note
(/work/shared/seed/kimi-k2-on-workstation-blackwell.txt); "assumption" means nobody
published it and we chose a value — the planner prints these so a reader can disagree.
No torch here: the planner must import in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GB = 1e9  # all planner output is in decimal GB; capacities below are converted from MiB
MIB = 1024 * 1024


@dataclass(frozen=True)
class ModelPreset:
    name: str
    hidden: int                 # H
    moe_inter: int              # I, per routed / shared expert
    dense_inter: int            # MLP width of the dense (non-MoE) first layers
    layers: int
    first_dense_layers: int     # layers with a dense MLP instead of MoE
    experts: int                # routed experts per MoE layer
    top_k: int
    shared_experts: int
    vocab: int
    tied_embeddings: bool
    attention: str              # "mla" or "gqa"
    q_heads: int
    # MLA (DeepSeek-V3 style) dims
    q_lora: int = 0
    kv_lora: int = 0
    qk_nope: int = 0
    qk_rope: int = 0
    v_head: int = 0
    # GQA dims
    kv_heads: int = 0
    head_dim: int = 0
    source: str = ""
    assumptions: tuple[str, ...] = field(default_factory=tuple)
    seed_total_params: float | None = None    # what the seed table claims, for comparison
    seed_active_params: float | None = None

    @property
    def moe_layers(self) -> int:
        return self.layers - self.first_dense_layers


# Real Kimi-K2 config: huggingface.co/moonshotai/Kimi-K2-Instruct/blob/main/config.json
# (hidden_size 7168, moe_intermediate_size 2048, intermediate_size 18432, num_hidden_layers 61,
# first_k_dense_replace 1, n_routed_experts 384, num_experts_per_tok 8, n_shared_experts 1,
# vocab_size 163840, tie_word_embeddings false, num_attention_heads 64, q_lora_rank 1536,
# kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128).
# Same shapes in /work/shared/docs/contract.md. K2-Instruct-0905, K2-Thinking and K2.5 keep them.
KIMI_K2 = ModelPreset(
    name="kimi-k2", hidden=7168, moe_inter=2048, dense_inter=18432, layers=61,
    first_dense_layers=1, experts=384, top_k=8, shared_experts=1, vocab=163840,
    tied_embeddings=False, attention="mla", q_heads=64, q_lora=1536, kv_lora=512,
    qk_nope=128, qk_rope=64, v_head=128,
    source="HF moonshotai/Kimi-K2-Instruct config.json (real checkpoint)",
    assumptions=(),
)

# The seed's K2.6 column: H 7168, 384 experts (256 after REAP), top-6, GQA.
# The seed gives no layer count, head counts or vocab: we take them from the real config
# and assume GQA with 8 KV heads x 128 (the usual GQA shape; same as the SDPA benchmark
# shape 64/8, D 128 in /work/shared/docs/gpu.md). Override with --kv-heads/--head-dim.
K2_6 = ModelPreset(
    name="k2.6", hidden=7168, moe_inter=2048, dense_inter=18432, layers=61,
    first_dense_layers=1, experts=384, top_k=6, shared_experts=1, vocab=163840,
    tied_embeddings=False, attention="gqa", q_heads=64, kv_heads=8, head_dim=128,
    source="seed table (H, E, top-k, GQA); rest from the real Kimi-K2 config",
    assumptions=(
        "layers 61 / 1 dense / vocab 163840 / 1 shared expert: copied from real Kimi-K2 (seed silent)",
        "GQA 64 q heads, 8 KV heads x 128: assumption (seed says GQA, gives no numbers)",
    ),
    seed_total_params=700e9, seed_active_params=40e9,
)

# The seed's K2.0 column: H 6144, 384 experts, top-8, GQA. Same caveats as K2.6; with
# head_dim 128, H 6144 gives 48 query heads.
K2_0 = ModelPreset(
    name="k2.0", hidden=6144, moe_inter=2048, dense_inter=18432, layers=61,
    first_dense_layers=1, experts=384, top_k=8, shared_experts=1, vocab=163840,
    tied_embeddings=False, attention="gqa", q_heads=48, kv_heads=8, head_dim=128,
    source="seed table (H, E, top-k, GQA); I=2048 from contract.md; rest from real Kimi-K2",
    assumptions=(
        "layers 61 / 1 dense / vocab 163840 / dense MLP 18432: copied from real Kimi-K2 (seed silent)",
        "GQA 48 q heads (H/128), 8 KV heads x 128: assumption",
    ),
    seed_total_params=600e9, seed_active_params=32e9,
)

MODELS = {m.name: m for m in (KIMI_K2, K2_6, K2_0)}


@dataclass(frozen=True)
class GpuPreset:
    name: str
    capacity_mib: int           # what nvidia-smi reports as memory.total
    mem_bw_gbs: float           # datasheet memory bandwidth, GB/s
    mem_bw_measured_gbs: float | None
    link: str                   # "pcie5" or "nvlink"
    link_gbs_per_dir: float     # per-direction GPU<->GPU bandwidth, GB/s
    source: str

    @property
    def capacity_gb(self) -> float:
        return self.capacity_mib * MIB / GB


# PCIe 5.0 x16: 32 GT/s x 16 lanes x 128/130 encoding / 8 = 63.0 GB/s per direction (PCI-SIG spec).
PCIE5_X16_GBS = 32 * 16 * 128 / 130 / 8
GPUS = {g.name: g for g in (
    # NVIDIA RTX PRO 6000 Blackwell datasheet: 96 GB GDDR7 (ECC), 512-bit, 1792 GB/s, PCIe 5.0 x16,
    # no NVLink. nvidia-smi reports 97,887 MiB (= 102.6 GB) on Workstation and Server Editions
    # (many public nvidia-smi logs). "96 GB" is 32 x 3 GiB GDDR7 = 96 GiB before the driver's share.
    GpuPreset("rtx-pro-6000", 97887, 1792.0, None, "pcie5", PCIE5_X16_GBS,
              "NVIDIA RTX PRO 6000 Blackwell datasheet; nvidia-smi 97887 MiB"),
    # GeForce RTX 5090 spec: 32 GB GDDR7, 512-bit, 1792 GB/s, PCIe 5.0 x16; nvidia-smi 32,607 MiB.
    # GeForce drivers disable GPU peer-to-peer: NCCL goes through host memory, slower than 63 GB/s.
    GpuPreset("rtx-5090", 32607, 1792.0, None, "pcie5", PCIE5_X16_GBS,
              "NVIDIA GeForce RTX 5090 spec; nvidia-smi 32607 MiB; no P2P on GeForce"),
    # H200 SXM datasheet: 141 GB HBM3e, 4.8 TB/s, NVLink 4 900 GB/s total = 450 GB/s per direction.
    # nvidia-smi 143,771 MiB. Measured 4.27 TB/s streaming read (docs/gpu.md, 2026-11-29).
    GpuPreset("h200", 143771, 4800.0, 4270.0, "nvlink", 450.0,
              "NVIDIA H200 datasheet; nvidia-smi 143771 MiB; 4.27 TB/s measured (shared/docs/gpu.md)"),
    # H100 SXM5 datasheet: 80 GB HBM3, 3.35 TB/s, NVLink 4 900 GB/s total; nvidia-smi 81,559 MiB.
    GpuPreset("h100", 81559, 3350.0, None, "nvlink", 450.0,
              "NVIDIA H100 SXM datasheet; nvidia-smi 81559 MiB"),
    # HGX B200 datasheet: 180 GB HBM3e, 8 TB/s, NVLink 5 1.8 TB/s total = 900 GB/s per direction;
    # nvidia-smi 183,359 MiB.
    GpuPreset("b200", 183359, 8000.0, None, "nvlink", 900.0,
              "NVIDIA HGX B200 datasheet; nvidia-smi 183359 MiB"),
)}


# Bits per stored weight element INCLUDING block scales.
WEIGHT_BITS = {
    # NVFP4: 4-bit E2M1 + one e4m3 scale per 16 elements (contract.md). The fp32 per-expert
    # global scales (16 B per expert) are ignored: 6e-7 of an expert.
    "nvfp4": 4 + 8 / 16,
    # INT4 W4A16 as in moonshotai/Kimi-K2-Thinking (compressed-tensors pack-quantized,
    # group 32, bf16 scales): 4 + 16/32. Same 4.5 bits as NVFP4.
    "int4": 4 + 16 / 32,
    # FP8 e4m3 with one fp32 scale per 128x128 block (Kimi-K2-Instruct's weight_block_size).
    "fp8": 8 + 32 / (128 * 128),
    "bf16": 16.0,
}

KV_BYTES = {"fp8": 1, "bf16": 2}  # per cached element; FP8 per-tensor/per-head scales ignored

# Assumptions for things no datasheet gives. Printed by the CLI; each is overridable.
DEFAULTS = dict(
    # CUDA context + cuBLAS/NCCL workspaces + allocator slack per GPU. PyTorch's CUDA context
    # alone is ~0.5 GB on Hopper/Blackwell; NCCL adds buffers per communicator. Assumption.
    overhead_gb=1.5,
    # Tokens per prefill chunk whose activations must fit next to the weights (vLLM-style
    # chunked prefill). Assumption; decode activations are far smaller.
    prefill_chunk=2048,
    # Latency of one small NCCL collective (all-reduce / all-to-all step) at decode sizes.
    # Order-of-magnitude assumption, not measured here: PCIe without NVLink ~25 us, NVLink ~8 us.
    collective_latency_us={"pcie5": 25.0, "nvlink": 8.0},
    # Fraction of datasheet link bandwidth NCCL reaches on large messages. Assumption.
    link_efficiency=0.8,
)
