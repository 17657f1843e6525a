"""The papers ``invphys reproduce --paper NAME`` knows, and the dispatcher that runs them.

A paper is one module (or package) under ``invphys/experiments/`` that defines
``PAPER = Paper(name, description, run)`` and one line in :data:`PAPERS` (name ->
module, imported only when that paper runs)::

    # invphys/experiments/sgn.py
    from .papers import Context, Paper
    from .report import Report

    def run(ctx: Context) -> Report:
        store = ctx.models                # ModelStore: shipped models or training
        ...                               # ctx.out (the paper's folder), ctx.quick
        return Report(tables={"main_table": rows}, public={...}, readme=markdown,
                      draw=my_figures, images=("convergence.png",),
                      device=jax.devices()[0].device_kind, wall_s=..., quick=ctx.quick)

    PAPER = Paper("sgn", "stochastic Gauss-Newton for PINNs", run)

    # and here:  PAPERS = {..., "sgn": "invphys.experiments.sgn"}

``run`` returns its sections as one :class:`~invphys.experiments.report.Report`; the
shared writer (:mod:`invphys.experiments.report`) writes its tables, figures,
results.json and figures.json into ``ctx.out`` and, with ``--readme``, its README
section between ``<!-- results:NAME:start -->`` and ``<!-- results:NAME:end -->``.
``Paper.parts``: the names ``--problems`` may choose among (``ctx.parts``: the chosen
ones, in the paper's order); ``needs_models``: whether the run reads shipped models
(then a missing models folder is an error before anything runs).

``--paper NAME`` writes into ``--out``; ``--paper all`` runs every paper, each into
``OUT/NAME/``.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._errors import InvphysError
from .models import ModelStore, resolve_models_dir
from .report import Report, check_readme, has_markers, readme_section, update_readme, write

#: paper name -> the module that defines its ``PAPER``.
PAPERS: dict[str, str] = {
    "deceptron": "invphys.experiments.deceptron",
    "diag-gn": "invphys.experiments.diag_gn",
    "full-gn": "invphys.experiments.full_gn",
    "sgn": "invphys.experiments.sgn",
    "mixed-newton": "invphys.experiments.mixed_newton",
    "ddpinn": "invphys.experiments.ddpinn",
}
DEFAULT = "deceptron"
ALL = "all"


@dataclasses.dataclass(frozen=True)
class Context:
    """What a paper's run gets: where to write (``out``), the models (``models``: shipped
    or trained into ``out/models``), the run size (``quick``), the chosen ``parts``
    (None: all) and whether to show progress."""

    out: Path
    models: ModelStore
    quick: bool = False
    parts: tuple[str, ...] | None = None
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class Section:
    """A part of a paper's run that lives in its own module (e.g. a 2D study).

    ``run(ctx, settings, log)`` (``settings``: the paper's own) returns a dict with any
    of ``tables`` (name -> rows, the first row the header), ``public`` (into results.json
    under the section's name), ``figures`` (into figures.json), ``readme`` (Markdown
    appended to the paper's README section) and ``images`` (figure files under
    ``ctx.out``, linked from the README)."""

    name: str
    run: Callable[[Context, Any, Callable[[str], None]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Paper:
    """A reproducible paper: ``run(ctx) -> Report`` (see the module docstring)."""

    name: str
    description: str
    run: Callable[[Context], Report]
    parts: tuple[str, ...] = ()
    needs_models: bool = True
    quick_parts: tuple[str, ...] = ()  # what --quick runs without --problems (default: parts)

    def default_parts(self, quick: bool) -> tuple[str, ...]:
        return self.quick_parts if quick and self.quick_parts else self.parts


def names() -> list[str]:
    """Every registered paper, the default first."""
    return [DEFAULT] + sorted(n for n in PAPERS if n != DEFAULT)


def get(name: str) -> Paper:
    if name not in PAPERS:
        raise InvphysError(f"unknown paper {name!r} (known: {', '.join(names())}, {ALL})")
    paper = importlib.import_module(PAPERS[name]).PAPER
    if paper.name != name:
        raise InvphysError(f"{PAPERS[name]} defines paper {paper.name!r}, not {name!r}")
    return paper


def select(name: str) -> list[Paper]:
    """The papers ``--paper name`` runs (``all``: every one)."""
    return [get(n) for n in names()] if name == ALL else [get(name)]


def _parts(paper: Paper, parts) -> tuple[str, ...] | None:
    if parts is None:
        return None
    unknown = [p for p in parts if p not in paper.parts]
    if unknown and paper.parts:
        raise InvphysError(f"paper {paper.name!r} has no part {', '.join(unknown)} "
                           f"(its parts: {', '.join(paper.parts)})")
    return tuple(p for p in paper.parts if p in parts)


def command_line(paper: str, quick: bool, out: Path, readme: Path,
                 parts: tuple[str, ...] | None = None) -> str:
    """The command that regenerates a README section (printed in it)."""
    rel = Path(out).resolve().relative_to(Path(readme).resolve().parent)
    return (f"invphys reproduce{'' if paper == DEFAULT else f' --paper {paper}'}"
            f"{' --quick' if quick else ''}{' --problems ' + ' '.join(parts) if parts else ''}"
            f" --out {rel} --readme {Path(readme).name}")


def _subset(paper: Paper, picked: tuple[str, ...] | None,
            quick: bool) -> tuple[str, ...] | None:
    """The parts of a run that differs from the paper's default run (else None)."""
    if picked is None or not paper.parts or set(picked) == set(paper.default_parts(quick)):
        return None
    return picked


def section_names(readme: Path, chosen: list[Paper], picked: dict,
                  quick: bool) -> dict[str, str]:
    """paper -> the README section its run writes: ``NAME/PART+PART`` when the run
    leaves parts out and the README has markers for exactly that subset (an expensive
    part's full run beside the whole paper's quick one), else ``NAME``."""
    try:
        text = Path(readme).read_text()
    except OSError:
        text = ""  # check_readme raises, naming the file
    out = {}
    for p in chosen:
        sub = _subset(p, picked[p.name], quick)
        key = p.name if sub is None else f"{p.name}/{'+'.join(sub)}"
        out[p.name] = key if has_markers(text, key) else p.name
    return out


def reproduce(paper: str = DEFAULT, out: str | Path = "out/reproduce", *, quick: bool = False,
              models: str | Path | None = None, parts=None, readme: str | Path | None = None,
              progress: bool = True) -> dict[str, Report]:
    """Run ``paper`` (a name or ``"all"``), write each paper's report and, with
    ``readme``, its README section. ``models``: the shipped models' folder (default:
    the checkout's ``models/``; see :func:`invphys.experiments.models.resolve_models_dir`).
    Bad names, a missing models folder or missing README markers raise before any run."""
    chosen = select(paper)
    out = Path(out)
    folders = {p.name: out if paper != ALL else out / p.name for p in chosen}
    models_dir = resolve_models_dir(models) if any(p.needs_models for p in chosen) else None
    picked = {p.name: _parts(p, parts) for p in chosen}
    if readme is not None:
        sections = section_names(Path(readme), chosen, picked, quick)
        check_readme(Path(readme), list(sections.values()), DEFAULT)
    reports: dict[str, Report] = {}
    for p in chosen:
        folder = folders[p.name]
        folder.mkdir(parents=True, exist_ok=True)
        ctx = Context(out=folder, models=ModelStore(models_dir, folder, progress), quick=quick,
                      parts=picked[p.name], progress=progress)
        t0 = time.perf_counter()
        report = p.run(ctx)
        if not report.wall_s:
            report.wall_s = time.perf_counter() - t0
        write(report, folder)
        reports[p.name] = report
    if readme is not None:
        readme = Path(readme)
        if progress:
            print("README sections rewritten: " + ", ".join(sections[n] for n in reports))
        update_readme(readme, {
            sections[name]: readme_section(
                r, folders[name], readme,
                command_line(paper if paper == ALL else name, quick, out, readme,
                             _subset(get(name), picked[name], quick)))
            for name, r in reports.items()}, DEFAULT)
    return reports


def describe() -> dict[str, Any]:
    """name -> one-line description of every paper (imports each paper module)."""
    return {n: get(n).description for n in names()}
