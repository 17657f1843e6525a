"""The Deceptron paper's reproduction: paper mode, beyond mode, the JCP ablation, the
difficulty sweep and the Deblur-2D study, run in that order and gathered for the
shared report writer.

Every method solves all test problems of a run in one batched, jitted call. Timing
(:func:`invphys.experiments.timing.time_call`): the batched call is run once to compile,
then timed (the fastest of a few repeats when a call takes well under a second: the
2-core machine is shared and its clock noisy); ``ms_per_iter`` = wall time / total
iterations of the batch, ``time_to_eps_s`` = wall time per problem of a batched solve
that stops each problem at its target.

The Heat-only studies (:mod:`.ablation`, :mod:`.sweep`) run in paper mode on the same 40
test problems as the main table. Extra sections (the 2D study) plug in as
:class:`invphys.experiments.papers.Section`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax

from ..._data import make_dataset
from ..._spec import load_spec
from ...learn import TrainConfig
from ..models import ModelStore
from ..papers import Context, Section
from ..report import Report
from . import tables as T
from .ablation import ablation
from .beyond import beyond_mode
from .common import Settings, load_problem_paper, model_summary, training_log
from .figures import figures
from .paper_mode import paper_mode, physical_units_mode
from .sweep import difficulty_sweep

PROBLEMS = ("heat1d", "oscillator")


class _Progress:
    """A tqdm bar over the run's stages (one tick per batched solve or trained model),
    with the log lines printed above it."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="reproduce", unit="stage", dynamic_ncols=True)

    def log(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _stages(problems, settings: Settings, extra_sections) -> int:
    total = 0
    for name in problems:
        total += 4 + 8  # paper mode's 4 methods, beyond mode's 8
        if name in settings.paper_physical:
            total += 4
        if name == "heat1d":
            total += len(settings.ablation) + len(settings.sweep_steps)
    return total + len(extra_sections)


def reproduce(store: ModelStore, quick: bool = False, problems=PROBLEMS, progress: bool = True,
              settings: Settings | None = None, extra_sections: tuple[Section, ...] = (),
              ctx: Context | None = None) -> dict[str, Any]:
    """Run the comparison; return the results (tables, figures and JSON come from them,
    :mod:`.tables`). Models: shipped in ``store.models`` or trained into
    ``store.out/models``. ``extra_sections`` run after the problems; their output goes
    under ``results["extra"][section.name]`` (see :class:`Section`)."""
    settings = settings or Settings.make(quick)
    ctx = ctx or Context(out=store.out, models=store, quick=quick, progress=progress)
    results: dict[str, Any] = {"settings": dataclasses.asdict(settings),
                               "device": jax.devices()[0].device_kind}
    models: dict[str, Any] = {}
    t_all = time.perf_counter()
    bar = _Progress(_stages(problems, settings, extra_sections), progress)
    log = bar.log

    for name in problems:
        spec = load_spec(name)
        problem = load_problem_paper(spec)
        log(f"[{name}] simulating the dataset "
            f"({spec['data']['n_train']}/{spec['data']['n_val']}/{spec['data']['n_test']})")
        dataset = make_dataset(problem, progress=False)
        paper_cfg = TrainConfig.from_spec(spec) if spec["train"]["model"] == "linear" \
            else TrainConfig()  # the paper's affine Deceptron
        ck_paper, how = store.deceptron(spec, dataset, paper_cfg, f"{name}-linear")
        log(f"[{name}] paper model: {how}")
        ck_beyond, how_b = ck_paper, how
        if spec["train"]["model"] != "linear":
            ck_beyond, how_b = store.deceptron(spec, dataset, TrainConfig.from_spec(spec),
                                               f"{name}-{spec['train']['model']}")
            log(f"[{name}] beyond model: {how_b}")

        def method_log(mode, name=name):
            def line(m, r):
                bar.tick()
                log(f"[{name}/{mode}] {m:<8} iters to eps {r['iterations_mean']:6.1f} "
                    f"(median {r['iterations_median']:.0f}), success {r['success']:.2f}, "
                    f"accepted {r['accepted_fraction']:.2f}, {r['ms_per_iter']:.3f} ms/iter, "
                    f"{1e3 * r['time_to_eps_s']:.3f} ms/problem to eps")
            return line

        t0 = time.perf_counter()
        paper = paper_mode(spec, dataset, ck_paper, method_log("paper"))
        log(f"[{name}] paper mode done in {time.perf_counter() - t0:.0f} s")
        if name in settings.paper_physical:
            physical = physical_units_mode(spec, dataset, ck_paper, method_log("paper-physical"))
        t0 = time.perf_counter()
        beyond = beyond_mode(spec, dataset, ck_beyond, settings, method_log("beyond"))
        log(f"[{name}] beyond mode done in {time.perf_counter() - t0:.0f} s")
        results[name] = {"paper": paper}
        if name in settings.paper_physical:
            results[name]["paper-physical"] = physical
        results[name]["beyond"] = beyond
        models[name] = {"paper": model_summary(ck_paper, how),
                        "beyond": model_summary(ck_beyond, how_b)}
        models[name]["_paper_log"] = training_log(ck_paper)
        if name == "heat1d":
            t0 = time.perf_counter()

            def ticking(msg):
                bar.tick()
                log(msg)

            results["ablation"] = ablation(spec, dataset, paper_cfg, ck_paper, store,
                                           settings, ticking)
            results["sweep"] = difficulty_sweep(
                spec, {"paper": paper, "ck": ck_paper, "cfg": paper_cfg}, settings, store,
                ticking)
            log(f"[{name}] ablation and difficulty sweep done in "
                f"{time.perf_counter() - t0:.0f} s")
    for section in extra_sections:
        t0 = time.perf_counter()
        results.setdefault("extra", {})[section.name] = section.run(ctx, settings, log)
        bar.tick()
        log(f"[{section.name}] done in {time.perf_counter() - t0:.0f} s")
    bar.close()
    results["models"] = models
    results["wall_s"] = time.perf_counter() - t_all
    return results


def to_report(results: dict[str, Any]) -> Report:
    """The shared writer's view of a run's results."""
    return Report(tables=T.tables(results), public=T.public(results),
                  figures=T.figure_numbers(results), readme=T.readme_body(results),
                  note=T.readme_note(results), images=T.readme_images(results),
                  draw=lambda folder: figures(results, Path(folder)),
                  device=results["device"], wall_s=results["wall_s"],
                  quick=results["settings"]["quick"])


def run(ctx: Context) -> Report:
    """``invphys reproduce --paper deceptron``: heat1d and the oscillator in paper and
    beyond mode (with Heat's ablation and sweep), then the Deblur-2D study; ``ctx.parts``
    picks among them."""
    from ..deblur import section

    parts = ctx.parts if ctx.parts is not None else (*PROBLEMS, "deblur2d")
    extra = (section(),) if "deblur2d" in parts else ()
    results = reproduce(ctx.models, quick=ctx.quick,
                        problems=tuple(p for p in parts if p in PROBLEMS),
                        progress=ctx.progress, extra_sections=extra, ctx=ctx)
    return to_report(results)
