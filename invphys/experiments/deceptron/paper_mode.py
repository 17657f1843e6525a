"""Paper mode: the Deceptron protocol exactly.

The learned affine surrogate f is the objective, residuals live in the training
normaliser's z-space, 20 test problems x 2 seeds, eps = 0.30, the paper's fixed
starts; methods x-GD (``pg``), D-IPG (paper form), projected GN (lam = 1e-3, 8 CG) and
our adaptive LM, all under the shared protocol, run to the protocol's full length (the
histories feed the figures) and timed, plus a timed stop-at-eps run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..._data import Dataset
from ..._problem import Problem
from ..._spec import Spec
from ...solve import DIPG, GaussNewton, ProjectedGradient, Rules
from .common import adaptive_lm, load_problem_paper, pick, run_methods


@dataclasses.dataclass(frozen=True)
class PaperSetup:
    """The paper protocol's solve inputs for one model: the surrogate objective, the 20 x 2
    test observations in z-space, the fixed start and the rules."""

    surrogate: Problem
    y: Any
    x0: Any
    rules: Rules
    index: np.ndarray


def paper_setup(spec: Spec, dataset: Dataset, ck, constraints: Problem | None = None
                ) -> PaperSetup:
    """``constraints``: the problem whose constraint set (and compiled solves) to reuse; the
    sweep passes the T = 200 problem, whose constraint set and start are the same."""
    problem = constraints if constraints is not None else load_problem_paper(spec)
    surrogate = problem.with_forward(ck.model.f, name=f"{problem.name}[surrogate]")
    s = spec["solve"]
    idx = np.concatenate([pick(seed, dataset.x_test.shape[0], s["n_eval"])
                          for seed in s["eval_seeds"]])
    y = ck.normaliser.transform(dataset.y_test[idx])
    return PaperSetup(surrogate=surrogate, y=y, x0=problem.start(),
                      rules=Rules(eps=s["eps"], max_iter=s["max_iter"]), index=idx)


def paper_methods(ck, problem: Problem, names=("pg", "dipg", "gn", "lm")) -> dict[str, Any]:
    every = {"pg": ProjectedGradient, "dipg": lambda: DIPG(inverse=ck.model.g, form="paper"),
             "gn": GaussNewton, "lm": lambda: adaptive_lm(problem)}
    return {k: every[k]() for k in names}


def paper_mode(spec: Spec, dataset: Dataset, ck, log) -> dict[str, Any]:
    """Every paper method on the protocol's test problems, timed (``log(method, row)``
    after each)."""
    ps = paper_setup(spec, dataset, ck)
    res = run_methods(ps.surrogate, ps.y, ps.x0, paper_methods(ck, ps.surrogate), ps.rules,
                      progress=log)
    res["_test_index"] = ps.index.tolist()
    return res
