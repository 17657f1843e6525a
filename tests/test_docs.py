"""The documentation runs: every command of the README's "Command line" section exits 0
(in a temporary folder, at small sizes where the table below says so), and every
tutorial under docs/tutorials/ runs at its test size (``--small``) and draws its figure.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))

# README command (comment stripped) -> what the test runs instead, and why. Commands not
# listed here run exactly as written.
SUBSTITUTIONS: dict[str, tuple[str, str]] = {
    "source .venv/bin/activate": (
        "true", "the test puts this interpreter's bin/ (the venv's) on PATH itself"),
    "invphys train heat1d --out out/heat1d-linear": (
        "invphys train heat1d --out out/heat1d-linear --epochs 2 --quiet "
        "--set data.n_train=256 --set data.n_val=64 --set data.n_test=64",
        "the full protocol (60 epochs x 5000 samples) takes about a minute"),
    "invphys reproduce --quick --out out/reproduce": (
        "invphys reproduce --help",
        "--quick still takes minutes (tests/test_reproduce.py covers the run itself)"),
    "invphys train deblur2d --out out/my-deceptronnet": (
        "invphys train deblur2d --out out/my-deceptronnet --epochs 1 --quiet "
        "--set train.channels=4 --set data.n_train=16 --set data.n_val=8 "
        "--set data.n_test=8",
        "DeceptronNet v0 at full size trains for minutes"),
    "python -m benchmarks.forward": (
        "python -m benchmarks.forward --batch 8 --fidelity paper --problems heat1d",
        "the full throughput table takes minutes"),
    "python -m benchmarks.solvers --quick": (
        "python -m benchmarks.solvers --help",
        "--quick compares four solvers on two problems: minutes"),
}


def readme_commands() -> list[str]:
    """The shell lines of the first ```bash block of the README's "## Command line"."""
    text = README.read_text()
    section = re.search(r"^## Command line\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert section, "README.md has no '## Command line' section"
    block = re.search(r"```bash\n(.*?)```", section.group(1), flags=re.S)
    assert block, "the README's Command line section has no ```bash block"
    lines = []
    for line in block.group(1).splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


def test_substitutions_name_readme_commands():
    """A stale entry in the table would silently stop testing a README line."""
    commands = readme_commands()
    assert commands
    stale = set(SUBSTITUTIONS) - set(commands)
    assert not stale, f"SUBSTITUTIONS names commands no longer in the README: {stale}"


@pytest.mark.slow  # every README command at small size: ~70 s of CPU (make test-all)
def test_readme_commands_run(tmp_path):
    """Every README command line exits 0 from a fresh folder, in order, writing only
    under out/ (models/ is the checkout's, linked in read-only use)."""
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    env = _env()
    for line in readme_commands():
        cmd = SUBSTITUTIONS.get(line, (line, ""))[0]
        argv = shlex.split(cmd)
        if argv[0] == "python":
            argv[0] = sys.executable
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"`{cmd}` (README: `{line}`) exited {r.returncode}:\n" \
            f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "models"}


# the two training tutorials are the heaviest: they run with `make test-all`
HEAVY = {"surrogate_inverse", "gauss_newton_optimizer"}


@pytest.mark.parametrize("script", [
    pytest.param(p, marks=pytest.mark.slow) if p.stem in HEAVY else p for p in TUTORIALS],
    ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(script, tmp_path):
    """Each tutorial runs at its test size and ends in its figure."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(script), "--small", "--out", str(out)],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{script.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    figures = list(out.glob("*.png"))
    assert any(f.stem == script.stem for f in figures), \
        f"{script.name} drew no {script.stem}.png (found {figures})"


def test_tutorials_are_pages():
    """Every tutorial script is in the site's navigation (docs/hooks.py renders it)."""
    nav = (ROOT / "mkdocs.yml").read_text()
    for script in TUTORIALS:
        assert f"tutorials/{script.stem}.md" in nav, f"{script.name} is not in mkdocs.yml nav"
