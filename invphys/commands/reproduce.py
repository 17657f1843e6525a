"""``invphys reproduce``: the paper's tables and figures from our own runs, and beyond."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce the Deceptron paper's comparison (and go beyond it)",
        description="Paper mode (the protocol exactly) and beyond-paper mode (true "
        "simulator, scored x, strict tolerances) for heat1d and the oscillator. Writes "
        "results.json, tables (.md, .csv), figures (.png) and figures.json to --out.",
    )
    p.add_argument("--quick", action="store_true",
                   help="smaller beyond-paper evaluation (40 problems per problem type, 100 "
                   "iterations, the oscillator at paper fidelity)")
    p.add_argument("--out", type=Path, default=Path("out/reproduce"))
    p.add_argument("--problems", nargs="+", default=["heat1d", "oscillator", "deblur2d"],
                   choices=["heat1d", "oscillator", "deblur2d"],
                   help="which studies to run (deblur2d: DeceptronNet v0 vs x-GD and LM)")
    p.add_argument("--readme", type=Path,
                   help="also rewrite this README's Results section from the run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..experiments import report
    from ..experiments.reproduce import reproduce

    t0 = time.perf_counter()
    from ..experiments.deblur import section

    extra = (section(),) if "deblur2d" in args.problems else ()
    problems = tuple(p for p in args.problems if p != "deblur2d")
    results = reproduce(args.out, quick=args.quick, problems=problems, extra_sections=extra)
    if args.readme:
        report.update_readme(results, args.out, args.readme)
    print(f"reproduction written to {args.out}/ in {time.perf_counter() - t0:.0f} s "
          "(results.json, tables.md, *.csv, *.png, figures.json)")
    return 0
