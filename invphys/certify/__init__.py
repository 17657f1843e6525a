"""Certification problem tables: reference least-squares problems with known answers.

* :mod:`~invphys.certify.nist` -- the 27 NIST StRD nonlinear-regression datasets with
  certified parameters (11 digits) and residual sums of squares, scored by :func:`lre`.
* :mod:`~invphys.certify.mgh` -- the Moré-Garbow-Hillstrom (1981) test problems with
  their published minimum values, plus bound-constrained variants.

Only data and residual functions live here (no solver): a solver is certified by running
it on these tables and comparing with the known answers.
"""

from .mgh import MGH_BOUNDED, MGH_PROBLEMS, MGHProblem, get_mgh
from .nist import NIST_DATASETS, NIST_MODELS, NISTProblem, load_nist, lre

__all__ = [
    "MGH_BOUNDED",
    "MGH_PROBLEMS",
    "NIST_DATASETS",
    "NIST_MODELS",
    "MGHProblem",
    "NISTProblem",
    "get_mgh",
    "load_nist",
    "lre",
]
