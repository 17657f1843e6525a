"""Learned local inverses: Deceptrons, their losses, training and checkpoints.

* :class:`Deceptron` (the paper's affine pair) and :class:`MLPDeceptron`, both
  :class:`AbstractDeceptron` with ``f(x)`` (raw x -> normalised z) and ``g(z)``;
* the protocol's losses and the Jacobian Composition Penalty (:func:`jcp_estimate`);
* :func:`train_deceptron` (seeded, deterministic, resumable; :class:`TrainConfig` holds
  the spec's ``[train]`` keys) and :func:`train_from_spec` (the ``invphys train`` path);
* checkpoints: :func:`load_deceptron`, :func:`load_checkpoint`, :class:`Checkpoint`.
"""

from ._checkpoint import Checkpoint, check_compatible, load_checkpoint, load_deceptron
from ._deceptron import (
    AbstractDeceptron,
    Deceptron,
    MLPDeceptron,
    ridge_forward,
    ridge_inverse,
)
from ._losses import (
    LossWeights,
    composition_error,
    draw_probes,
    jcp_estimate,
    jcp_exact,
    jcp_from_probes,
    loss_terms,
    total_loss,
)
from ._metrics import evaluate
from ._train import TrainConfig, TrainState, train_deceptron, train_from_spec

__all__ = [
    "AbstractDeceptron", "Checkpoint", "Deceptron", "LossWeights", "MLPDeceptron",
    "TrainConfig", "TrainState", "check_compatible", "composition_error", "draw_probes",
    "evaluate", "jcp_estimate", "jcp_exact", "jcp_from_probes", "load_checkpoint",
    "load_deceptron", "loss_terms", "ridge_forward", "ridge_inverse", "total_loss",
    "train_deceptron", "train_from_spec",
]
