"""Learned local inverses: Deceptrons, their losses, training and checkpoints.

* :class:`Deceptron` (the paper's affine pair) and :class:`MLPDeceptron`, both
  :class:`AbstractDeceptron` with ``f(x)`` (raw x -> normalised z) and ``g(z)``;
* the protocol's losses and the Jacobian Composition Penalty (:func:`jcp_estimate`);
* :func:`train_deceptron` (seeded, deterministic, resumable; :class:`TrainConfig` holds
  the spec's ``[train]`` keys) and :func:`train_from_spec` (the ``invphys train`` path);
* checkpoints: :func:`load_deceptron`, :func:`load_checkpoint`, :class:`Checkpoint`;
* DeceptronNet v0 (Deblur-2D): :func:`train_deceptronnet` / :func:`train_net_from_spec`
  (the ``invphys train deblur2d`` path), :func:`load_deceptronnet`.
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
from ._train_net import (
    NetCheckpoint,
    NetTrainConfig,
    deblur_data,
    load_deceptronnet,
    load_net_checkpoint,
    train_deceptronnet,
    train_net_from_spec,
)

__all__ = [
    "AbstractDeceptron", "Checkpoint", "Deceptron", "LossWeights", "MLPDeceptron",
    "NetCheckpoint", "NetTrainConfig", "deblur_data", "load_deceptronnet",
    "load_net_checkpoint", "train_deceptronnet", "train_net_from_spec",
    "TrainConfig", "TrainState", "check_compatible", "composition_error", "draw_probes",
    "evaluate", "jcp_estimate", "jcp_exact", "jcp_from_probes", "load_checkpoint",
    "load_deceptron", "loss_terms", "ridge_forward", "ridge_inverse", "total_loss",
    "train_deceptron", "train_from_spec",
]
