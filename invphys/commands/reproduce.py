"""``invphys reproduce``: a paper's tables and figures from our own runs, and beyond."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._errors import InputFileError
from .._io import OutputError, check_input_file, check_output_dir, check_output_file


def register(sub: argparse._SubParsersAction) -> None:
    from ..experiments import papers

    p = sub.add_parser(
        "reproduce", help="reproduce a paper's comparison (default: the Deceptron paper)",
        description="Run one paper's reproduction (--paper; 'all' for every paper) and "
        "write results.json, tables (.md, .csv), figures (.png), figures.json and "
        "manifest.json to --out (with --paper all: OUT/NAME/ per paper).",
        epilog="A run always starts from the beginning: there is no resume of finished "
        "stages (models trained into OUT/models by an earlier run, and the shipped ones, "
        "are reused). The new output is written to a staging folder beside --out and "
        "swapped in whole at the end, so --out holds either the previous complete run or "
        "the new one, never a mix; manifest.json lists the run id and every file's "
        "SHA-256. --out must not contain the working directory.",
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
                   help="also rewrite this README's results section(s) from the run "
                   "('<!-- results:PAPER:start/end -->'; a run of some parts writes "
                   "'results:PAPER/PART+PART' instead when the README has those markers)")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    """Paths first, before any work (one-line errors naming the option)."""
    check_output_dir(args.out, what="--out")
    out, cwd = args.out.resolve(), Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise OutputError(f"--out {args.out} is or contains the working directory; the run "
                          "is swapped in whole at the end, so choose a folder below it")
    if args.models is not None and not args.models.is_dir():
        raise InputFileError(f"--models {args.models} is not a folder")
    if args.readme is not None:
        check_input_file(args.readme, what="--readme")
        check_output_file(args.readme, what="--readme")


def run(args: argparse.Namespace) -> int:
    import time

    from ..experiments import papers

    check_args(args)
    t0 = time.perf_counter()
    papers.reproduce(args.paper, args.out, quick=args.quick, models=args.models,
                     parts=args.problems, readme=args.readme)
    print(f"reproduction written to {args.out}/ in {time.perf_counter() - t0:.0f} s "
          "(results.json, tables.md, *.csv, *.png, figures.json, manifest.json)")
    return 0
