"""The ``invphys`` command line: thin wrappers around the library.

Each command lives in ``invphys/commands/<name>.py`` with ``register(subparsers)`` and
``run(args) -> int``. Float64 is enabled here, at the entry point. Any
:class:`~invphys.InvphysError` (bad spec, bad array, bad checkpoint, missing or
unwritable file), a bad option (argparse's usage errors) and any operating-system error
on a path becomes one line on stderr and exit status 2, never a traceback. Commands
check their input and output paths and option values before any work.

**Compilation cache.** XLA programs compiled by a command are kept in a persistent
cache (JAX's compilation cache) under the user cache directory
(``$INVPHYS_CACHE_DIR``, else ``$XDG_CACHE_HOME/invphys``, else ``~/.cache/invphys``),
in a folder per JAX version, so a second ``invphys solve`` of the same problem loads its
programs instead of compiling them again (tracing still runs). ``--no-compile-cache``
or ``INVPHYS_NO_COMPILE_CACHE=1`` turns it off; an unusable cache folder only costs the
speed-up (JAX then compiles as usual).

Exit status: 0 success; 1 the work ran but failed (e.g. a training that diverged; the
line says what was kept); 2 bad input, nothing computed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import jax

from ._errors import InvphysError
from ._version import __version__

COMMANDS = ("simulate", "solve", "train", "reproduce", "bench")

#: Environment variables: the cache root, and a switch that turns the cache off.
CACHE_DIR_ENV, NO_CACHE_ENV = "INVPHYS_CACHE_DIR", "INVPHYS_NO_COMPILE_CACHE"
#: The cache's size limit; JAX evicts the least recently used programs beyond it.
CACHE_MAX_BYTES = 1 << 30


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
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile every program afresh instead of reusing the persistent "
                        f"compilation cache (also: {NO_CACHE_ENV}=1)")
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


def compile_cache_dir(environ=os.environ) -> Path | None:
    """The persistent compilation cache folder for this JAX version, or ``None`` when the
    cache is switched off by ``INVPHYS_NO_COMPILE_CACHE`` (any value but "" and "0")."""
    if environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    root = environ.get(CACHE_DIR_ENV)
    if not root:
        xdg = environ.get("XDG_CACHE_HOME")
        root = Path(xdg) / "invphys" if xdg else Path.home() / ".cache" / "invphys"
    return Path(root) / f"jax-{jax.__version__}"


def enable_compile_cache(folder: Path) -> None:
    """Point JAX's persistent compilation cache at ``folder``, caching every program
    (the solvers' many small compiles add up to most of a command's start-up)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no cache then; the command itself is unaffected
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)


def main(argv: list[str] | None = None) -> int:
    jax.config.update("jax_enable_x64", True)
    parser = build_parser()
    args = parser.parse_args(argv)
    cache = None if args.no_compile_cache else compile_cache_dir()
    if cache is not None:
        enable_compile_cache(cache)
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
