"""Prebuild the kernel cache and check every kernel's resources without a GPU.

    python -m k2kernels.build --arch sm_90a,sm_120a --check

builds every kernel family for the given archs into the JIT cache (so users' first call is fast),
then prints per kernel: registers, stack, spills (LOCAL), static shared memory, and the dynamic
budgets declared with K2K_SMEM_BUDGET. Exits non-zero if a family fails to build, or (with --check)
if any sm_120a/sm_121a kernel needs more than 101 376 B of shared memory. """
from __future__ import annotations

import argparse
import os
import sys

from . import _build, _resources


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m k2kernels.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default=os.environ.get("K2K_CUDA_ARCHS", ""),
                   help="comma-separated archs, e.g. sm_90a,sm_120a (default: the visible GPU's)")
    p.add_argument("--families", default="", help="comma-separated kernel families (default: all)")
    p.add_argument("--check", action="store_true", help="print resource usage and enforce the SM120 budget")
    p.add_argument("-v", "--verbose", action="store_true", help="show compiler commands and output")
    args = p.parse_args(argv)
    archs = _build.parse_archs(args.arch) if args.arch else _build.target_archs()
    families = [f for f in args.families.split(",") if f] or None
    print(f"k2kernels.build: archs {','.join(archs)}; cache {_build.cache_root()}", flush=True)

    failures = []
    built = _build.build_all(archs=archs, families=families, verbose=args.verbose)
    for b in built:
        if b.error:
            skipped = "no sources yet" in b.error or "no kernels for these archs" in b.error
            print(f"  {b.family:14s} {'skipped' if skipped else 'FAILED'}: {b.error.splitlines()[0] if skipped else b.error}")
            if not skipped:
                failures.append(f"{b.family}: build failed")
        else:
            print(f"  {b.family:14s} ok ({','.join(b.archs)}; {'cached' if not b.seconds else f'{b.seconds:.0f} s'}) {b.path}")
    if args.check:
        failures += check(built)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall families built" + (" and within the SM120 shared-memory budget" if args.check else ""))
    return 0


def check(built) -> list[str]:
    limit = _build.SM120_SMEM_LIMIT
    failures = []
    print(f"\n{'family':14s} {'arch':8s} {'regs':>4s} {'stack':>5s} {'spill':>5s} {'smem':>7s}  kernel")
    for b in built:
        if b.error or b.path is None:
            continue
        for u in _resources.kernel_usage(b.path):
            flag = ""
            if u.arch.startswith("sm_12") and u.static_smem > limit:
                flag = "  <-- static SMEM over 101376 B"
                failures.append(f"{b.family}/{u.kernel} ({u.arch}): static SMEM {u.static_smem} > {limit}")
            if u.local:
                flag += "  <-- local memory (spills or local arrays): look at it"
            print(f"{b.family:14s} {u.arch:8s} {u.registers:4d} {u.stack:5d} {u.local:5d} {u.static_smem:7d}  {u.kernel}{flag}")
        for tag, nbytes in _resources.declared_budgets(b.path, b.family):
            over = nbytes > limit
            print(f"{b.family:14s} {'budget':8s} {'':4s} {'':5s} {'':5s} {nbytes:7d}  {tag} (declared static+dynamic)"
                  + ("  <-- over 101376 B" if over else ""))
            if over:
                failures.append(f"{b.family}/{tag}: declared {nbytes} B > {limit}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
