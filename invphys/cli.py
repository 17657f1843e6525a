"""The ``invphys`` command line: thin wrappers around the library.

Each command lives in ``invphys/commands/<name>.py`` with ``register(subparsers)`` and
``run(args) -> int``. Float64 is enabled here, at the entry point. Any
:class:`~invphys.InvphysError` (bad spec, bad array, bad checkpoint, missing or
unwritable file), a bad option (argparse's usage errors) and any operating-system error
on a path becomes one line on stderr and exit status 2, never a traceback. Commands
check their input and output paths and option values before any work.

Exit status: 0 success; 1 the work ran but failed (e.g. a training that diverged; the
line says what was kept); 2 bad input, nothing computed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import jax

from ._errors import InvphysError
from ._version import __version__

COMMANDS = ("simulate", "solve", "train", "reproduce", "bench")


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI's error convention: one line on stderr, exit status 2."""

    def error(self, message: str):  # noqa: D102
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="invphys",
        description="Physics inverse problems: simulate, train learned inverses, solve, "
        "reproduce the Deceptron paper.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"invphys.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"invphys.commands.{name}":
                continue  # command not built yet in this checkout
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    jax.config.update("jax_enable_x64", True)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except InvphysError as e:
        print(f"invphys {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the early checks could not foresee (a race, a full disk)
        where = f" {e.filename}" if e.filename else ""
        print(f"invphys {args.command}: error: cannot access{where} "
              f"({e.strerror or type(e).__name__})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"invphys {args.command}: interrupted", file=sys.stderr)
        return 130


def one_line(e: BaseException) -> str:
    """An error message on one line (a message may quote a multi-line value)."""
    return " ".join(str(e).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
