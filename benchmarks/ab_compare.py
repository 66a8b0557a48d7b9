"""Same-machine A/B of a change: a base revision's package and this tree's, each built into its own JIT
cache and timed in its own processes, alternating (base, new, base, new, ...), so that clock drift and
allocation luck fall on both sides. This is how every A/B in benchmarks/RESULTS.md since the sixth
session was run (then with throw-away driver scripts; this file replaces them).

  # 1. here, where git is: the base revision's k2kernels/ and csrc/, with THIS tree's benchmarks/
  #    (so both sides run the same benchmark code, each importing its own package)
  python benchmarks/ab_compare.py prepare --rev main --out exp_base
  # 2. on the GPU machine (carry exp_base and the wheels):
  python benchmarks/ab_compare.py run --base exp_base --families attention --rounds 2 -- \\
      benchmarks/bench_attention.py --cases prefill

`run` builds the families for both trees first (`python -m k2kernels.build`, caches under
--cache-root/{base,new}), then runs the script from each tree's copy with PYTHONPATH and cwd set to
that tree, and prints the last --tail lines of each run prefixed with its side. A run that fails
prints its exit status and the comparison stops (a half-run A/B is no A/B).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def prepare(rev: str, out: str) -> None:
    """k2kernels/ and csrc/ of `rev` (git archive), benchmarks/ of this tree, into `out`."""
    if os.path.exists(out) and os.listdir(out):
        raise SystemExit(f"ab_compare: {out} exists and is not empty; remove it or pick another --out")
    os.makedirs(out, exist_ok=True)
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "k2kernels", "csrc"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", out], input=archive.stdout, check=True)
    subprocess.run(["cp", "-r", os.path.join(REPO, "benchmarks"), out], check=True)
    print(f"ab_compare: {out} = k2kernels/ and csrc/ of {rev} + benchmarks/ of {REPO}")


def side_env(tree: str, cache: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([tree] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["K2K_CACHE_DIR"] = cache
    return env


def run_side(tag: str, tree: str, cache: str, argv: list[str], tail: int, timeout: float) -> None:
    proc = subprocess.run([sys.executable] + argv, cwd=tree, env=side_env(tree, cache), capture_output=True,
                          text=True, timeout=timeout)
    lines = (proc.stdout + proc.stderr).splitlines()
    for line in lines[-tail:] if tail > 0 else lines:
        print(f"{tag:4s} {line}", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"ab_compare: the {tag} run of {' '.join(argv)} exited with {proc.returncode}")


def run(base: str, new: str, families: str, rounds: int, script: list[str], cache_root: str, tail: int,
        timeout: float) -> None:
    if not script:
        raise SystemExit("ab_compare run: give the benchmark after '--', e.g. -- benchmarks/bench_attention.py --quick")
    sides = [("base", os.path.abspath(base)), ("new", os.path.abspath(new))]
    for tag, tree in sides:
        if not os.path.isfile(os.path.join(tree, script[0])):
            raise SystemExit(f"ab_compare: {script[0]} not found in the {tag} tree {tree}")
    if families != "none":                        # build first: no timed run waits on a compile
        for tag, tree in sides:
            run_side(tag, tree, os.path.join(cache_root, tag), ["-m", "k2kernels.build", "--families", families], 3,
                     timeout)
    for r in range(rounds):
        for tag, tree in sides:
            print(f"---- round {r + 1}/{rounds}: {tag}", flush=True)
            run_side(tag, tree, os.path.join(cache_root, tag), script, tail, timeout)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    script: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, script = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="copy a base revision (needs git)")
    p.add_argument("--rev", required=True)
    p.add_argument("--out", default="exp_base")
    r = sub.add_parser("run", help="build both trees, then alternate the benchmark (args after --)")
    r.add_argument("--base", default="exp_base")
    r.add_argument("--new", default=REPO, help="the changed tree (default: this checkout)")
    r.add_argument("--families", required=True,
                   help="kernel families to build first, e.g. attention or routing,moe_gemm,fused_moe; none: no build")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--cache-root", default=os.path.join(tempfile.gettempdir(), "k2k_ab"))
    r.add_argument("--tail", type=int, default=12, help="lines of each run's output to print (0: all)")
    r.add_argument("--timeout", type=float, default=300.0, help="seconds per build or run")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.rev, args.out)
    else:
        run(args.base, args.new, args.families, args.rounds, script, args.cache_root, args.tail, args.timeout)


if __name__ == "__main__":
    main()
