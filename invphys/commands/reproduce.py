"""``invphys reproduce``: a paper's tables and figures from our own runs, and beyond."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from ..experiments import papers

    p = sub.add_parser(
        "reproduce", help="reproduce a paper's comparison (default: the Deceptron paper)",
        description="Run one paper's reproduction (--paper; 'all' for every paper) and "
        "write results.json, tables (.md, .csv), figures (.png) and figures.json to --out "
        "(with --paper all: OUT/NAME/ per paper).",
    )
    p.add_argument("--paper", default=papers.DEFAULT, metavar="NAME",
                   choices=[*papers.names(), papers.ALL],
                   help=f"which paper ({', '.join(papers.names())} or {papers.ALL}; "
                   f"default {papers.DEFAULT})")
    p.add_argument("--quick", action="store_true",
                   help="smaller evaluation (deceptron: 40 problems per problem type, 100 "
                   "iterations, the oscillator at paper fidelity)")
    p.add_argument("--out", type=Path, default=Path("out/reproduce"))
    p.add_argument("--models", type=Path, metavar="DIR",
                   help="the shipped models' folder (default: the checkout's models/)")
    p.add_argument("--problems", nargs="+", metavar="PART",
                   help="which parts of the paper to run (deceptron: heat1d, oscillator, "
                   "deblur2d; default all)")
    p.add_argument("--readme", type=Path,
                   help="also rewrite this README's results section(s) from the run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..experiments import papers

    t0 = time.perf_counter()
    papers.reproduce(args.paper, args.out, quick=args.quick, models=args.models,
                     parts=args.problems, readme=args.readme)
    print(f"reproduction written to {args.out}/ in {time.perf_counter() - t0:.0f} s "
          "(results.json, tables.md, *.csv, *.png, figures.json)")
    return 0
