"""The Deceptron paper (``invphys reproduce --paper deceptron``, the default).

Sections, one module each: :mod:`.paper_mode` (the protocol exactly), :mod:`.beyond`
(the true simulator, scored x, strict stops), :mod:`.ablation` (JCP), :mod:`.sweep`
(Heat difficulty), the Deblur-2D study (:mod:`invphys.experiments.deblur`); the run
(:mod:`.run`) gathers them, :mod:`.tables` and :mod:`.figures` turn the results into
what the shared writer writes.
"""

from ..papers import Paper
from .run import PROBLEMS, run

PAPER = Paper(
    name="deceptron",
    description="the Deceptron paper: paper mode, beyond-paper mode, JCP ablation, Heat "
    "difficulty sweep, DeceptronNet on Deblur-2D",
    run=run,
    parts=(*PROBLEMS, "deblur2d"),
)
