"""The ``invphys`` command line: thin wrappers around the library.

Each command lives in ``invphys/commands/<name>.py`` with ``register(subparsers)`` and
``run(args) -> int``. Float64 is enabled here, at the entry point. Any
:class:`~invphys.InvphysError` (bad spec, bad array, bad checkpoint, missing file)
becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import jax

from ._errors import InvphysError
from ._version import __version__

COMMANDS = ("simulate", "solve", "train", "reproduce", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        print(f"invphys {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"invphys {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
