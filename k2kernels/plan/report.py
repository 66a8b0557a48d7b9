"""Render a plan dict (planner.make_plan) as a readable text report."""
from __future__ import annotations


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def render(plan: dict) -> str:
    req, m, g = plan["request"], plan["model"], plan["gpu"]
    out = [
        f"k2kernels.plan: {m['name']} on {req['gpus']} x {g['name']}"
        f"  (experts {m['experts']} x {req['weights']}, dense {req['dense']}, KV {req['kv']},"
        f" context {req['context']} x batch {req['batch']})",
        f"model: H {m['hidden']}, I {m['moe_inter']}, {m['layers']} layers ({m['moe_layers']} MoE),"
        f" top-{m['top_k']}, {m['attention'].upper()}; {m['total_params_b']:.0f} B params,"
        f" {m['active_params_b']:.1f} B active/token",
        f"one expert: {m['expert_bytes_per_layer']:,.0f} B/layer, {m['expert_gb_all_layers']:.3f} GB over"
        f" all MoE layers; all routed experts {m['routed_experts_gb']:.1f} GB;"
        f" KV {m['kv_bytes_per_token']:,.0f} B/token (whole model, one copy)",
        f"gpu: {g['capacity_gb']:.1f} GB usable (nvidia-smi), {g['mem_bw_gbs']:.0f} GB/s,"
        f" {g['link']} {g['link_gbs_per_dir']:.0f} GB/s per direction  [{g['source']}]",
        "",
        "Per-GPU memory, GB (worst pipeline stage)",
    ]
    rows = []
    for p in plan["plans"]:
        w = p["worst_stage"]
        rows.append([p["layout"], f"{w['routed_experts_gb']:.1f}",
                     f"{w['dense_gb'] + w['embed_head_gb'] + w['router_norms_gb']:.1f}",
                     f"{w['kv_gb']:.1f}", f"{w['activations_gb'] + w['overhead_gb']:.1f}",
                     f"{w['total_gb']:.1f}", f"{w['capacity_gb']:.1f}", f"{w['margin_gb']:+.1f}",
                     "FITS" if p["fits"] else "NO", f"{p['max_kv_tokens']:,}"])
    out.append(_table(["layout", "experts", "dense+emb", "KV", "act+ovh", "total", "capacity",
                       "margin", "fits", "max KV tok"], rows))
    out += ["", f"Decode, batch {req['batch']}, context {req['context']} (tok/s over the whole batch)"]
    rows = []
    for p in plan["plans"]:
        d = p["decode"]
        rows.append([p["layout"], f"{d['weight_gb_per_step_per_gpu']:.2f}", f"{d['kv_gb_per_step_per_gpu']:.2f}",
                     f"{d['link_mb_per_step_per_gpu']:.2f}", str(d["collectives_per_step"]),
                     f"{d['mem_ms']:.2f}", f"{d['link_ms'] + d['latency_ms']:.2f}",
                     f"{d['bound_tok_s']:.0f}", f"{d['estimate_tok_s']:.0f}"])
    out.append(_table(["layout", "weights GB/GPU", "KV GB/GPU", "link MB/GPU", "collectives",
                       "mem ms", "link ms", "bound", "estimate"], rows))
    out += ["", "Seed check (seed: 4 x 96 GB workstation Blackwell, K2.6 NVFP4)"]
    for c in plan["seed_checks"]:
        mark = "ok  " if c["holds"] else "DIFF"
        out.append(f"  [{mark}] {c['claim']}")
        out.append(f"         seed: {c['seed']}")
        out.append(f"         ours: {c['ours']}")
        if c["note"]:
            out.append(f"         note: {c['note']}")
    out += ["", "Assumptions"] + [f"  - {a}" for a in plan["assumptions"]]
    return "\n".join(out)
