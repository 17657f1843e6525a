"""Import rules that import-linter cannot see (it checks modules, not names); `make lint`.

1. No module imports a private name (``_x``) from another package: ``from ..solve._protocol
   import _solve_one`` outside ``invphys/solve/`` fails. A package here is a top-level
   part of invphys (``solve/``, ``learn/``, ``_spec.py``, ...).
2. Nothing below the CLI imports the package root (``from .. import x``, ``import
   invphys``): the root only re-exports.
3. No library module changes global JAX config (``jax.config.update``); only entry
   points do (the CLI here; tests and benchmarks are not scanned).

Usage: python scripts/check_imports.py [package dir, default invphys]. Exit 1 on a finding.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

ENTRY_POINTS = ("cli", "commands")  # top-level parts that may import the root / set config


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def part(module: str) -> str:
    """The top-level part of invphys a module belongs to (``invphys`` for the root)."""
    return ".".join(module.split(".")[:2])


def _submodule(root: Path, name: str) -> bool:
    """Whether ``from root import name`` gives a subpackage or module of the root, not a
    name the root's ``__init__`` binds (a re-export may shadow a subpackage's name)."""
    if not ((root / name).is_dir() or (root / f"{name}.py").is_file()):
        return False
    init = root / "__init__.py"
    tree = ast.parse(init.read_text()) if init.is_file() else ast.Module(body=[])
    bound = {a.asname or a.name for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom | ast.Import) for a in node.names}
    return name not in bound


def check(path: Path, root: Path) -> list[str]:
    name = module_name(path, root)
    pkg = root.name
    tree = ast.parse(path.read_text(), str(path))
    below_cli = name != pkg and part(name).split(".")[-1] not in ENTRY_POINTS
    out = []
    for node in ast.walk(tree):
        where = f"{os.path.relpath(path)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom):
            src = resolve(node, name, path.name == "__init__.py")
            if src == pkg and below_cli and not all(_submodule(root, a.name) for a in node.names):
                # ``from .. import optim`` names a subpackage (fine); ``from .. import solve``
                # reaches a name the root re-exports (not fine)
                out.append(f"{where}: imports the package root ({pkg}); import from the layer")
            if src.split(".")[0] != pkg or part(src) == part(name):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{where}: imports private name {alias.name} from {src}")
        elif isinstance(node, ast.Import) and below_cli:
            if any(a.name == pkg for a in node.names):
                out.append(f"{where}: imports the package root ({pkg}); import from the layer")
        elif isinstance(node, ast.Call) and below_cli:
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "update"
                    and isinstance(f.value, ast.Attribute) and f.value.attr == "config"
                    and isinstance(f.value.value, ast.Name) and f.value.value.id == "jax"):
                out.append(f"{where}: changes global JAX config; only entry points may")
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "invphys").resolve()
    findings = [f for p in sorted(root.rglob("*.py")) for f in check(p, root)]
    for f in findings:
        print(f)
    print(f"check_imports: {len(findings)} finding(s) in {root.name}/")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
