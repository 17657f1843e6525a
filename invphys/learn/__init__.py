"""Learned local inverses and the one training harness.

* :class:`Deceptron` (the paper's affine pair) and :class:`MLPDeceptron`, both
  :class:`AbstractDeceptron` with ``f(x)`` (raw x -> normalised z) and ``g(z)``;
* the protocol's losses and the Jacobian Composition Penalty (:func:`jcp_estimate`);
* the harness: :func:`fit` drives any :class:`AbstractTask` (init, per-epoch plan,
  outputs, loss, end-of-epoch metrics) with any optax optimizer, handing each update the
  model and loss functions a Gauss-Newton optimizer needs (see :mod:`._trainer`);
  optimizers by name: :func:`make_optimizer`;
* tasks: :class:`DeceptronTask` (:func:`train_deceptron`, :func:`train_from_spec`, the
  ``invphys train`` path) and :class:`DeceptronNetTask` for DeceptronNet v0 on Deblur-2D
  (:func:`train_deceptronnet`, :func:`train_net_from_spec`);
* the checkpoint store (atomic files, SHA-256 in the card, resumable state):
  :func:`load_checkpoint`, :func:`load_deceptron`, :func:`load_net_checkpoint`,
  :func:`load_deceptronnet`, :func:`read_log`.
"""

from .._configs import NetTrainConfig, TrainConfig
from ._checkpoint import Checkpoint, check_compatible, load_checkpoint, load_deceptron, matches
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
    deceptron_outputs,
    draw_probes,
    jcp_estimate,
    jcp_exact,
    jcp_from_probes,
    loss_terms,
    terms_from_outputs,
    total_loss,
)
from ._metrics import evaluate, median_rel_errors
from ._optimizers import make_optimizer
from ._store import read_log
from ._train import DeceptronTask, steps_per_epoch, task_data, train_deceptron, train_from_spec
from ._train_net import (
    DeceptronNetTask,
    NetCheckpoint,
    deblur_data,
    load_deceptronnet,
    load_net_checkpoint,
    predict,
    split_keys,
    train_deceptronnet,
    train_net_from_spec,
    x_rmse,
)
from ._trainer import AbstractTask, TrainState, fit

__all__ = [
    "AbstractDeceptron", "AbstractTask", "Checkpoint", "Deceptron", "DeceptronNetTask",
    "DeceptronTask", "LossWeights", "MLPDeceptron", "NetCheckpoint", "NetTrainConfig",
    "TrainConfig", "TrainState", "check_compatible", "composition_error", "deblur_data",
    "deceptron_outputs", "draw_probes", "evaluate", "fit", "jcp_estimate", "jcp_exact",
    "jcp_from_probes", "load_checkpoint", "load_deceptron", "load_deceptronnet",
    "load_net_checkpoint", "loss_terms", "make_optimizer", "matches", "median_rel_errors",
    "predict", "read_log", "ridge_forward", "ridge_inverse", "split_keys", "steps_per_epoch",
    "task_data", "terms_from_outputs",
    "total_loss", "train_deceptron", "train_deceptronnet", "train_from_spec",
    "train_net_from_spec", "x_rmse",
]
