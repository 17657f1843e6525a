"""The import rules scripts/check_imports.py adds to the import-linter contracts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import check_imports  # noqa: E402


def test_check_imports_flags_private_names_root_imports_and_jax_config(tmp_path):
    pkg = tmp_path / "invphys"
    files = {
        "__init__.py": "from .solve import solve\n",
        "cli.py": "import jax\nfrom . import solve\njax.config.update('jax_enable_x64', True)\n",
        "solve/__init__.py": "from ._core import _loop, solve\n",
        "solve/_core.py": "def _loop(): ...\ndef solve(): ...\n",
        "learn/__init__.py": (
            "import jax\n"
            "from .. import solve\n"                      # the package root
            "from ..solve._core import _loop\n"           # a private name, another package
            "from ..solve import solve as s\n"            # fine: a public name
            "from ._private import _helper\n"             # fine: the same package
            "jax.config.update('jax_enable_x64', True)\n"  # global config in a library
        ),
        "learn/_private.py": "def _helper(): ...\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    findings = [f for p in sorted(pkg.rglob("*.py")) for f in check_imports.check(p, pkg)]
    assert len(findings) == 3, findings
    assert all("learn/__init__.py" in f for f in findings)
    assert "package root" in findings[0] and "_loop" in findings[1] and "JAX" in findings[2]
