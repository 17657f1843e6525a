"""Training configurations: the one place where the ``[train]`` keys and defaults live.

Each config is a frozen dataclass whose fields are the keys of a spec's ``[train]``
section. A field's metadata (:func:`setting`) holds its allowed values, its check and
its documentation; the spec schema (``invphys._spec``) derives the ``[train]`` keys from
these fields, and the dataclass validates itself with the same metadata, so a default
or a bound is written once.

* :class:`TrainConfig`: the Deceptron protocol (affine or MLP pair, JCP schedule);
* :class:`NetTrainConfig`: DeceptronNet v0 on Deblur-2D.

``optimizer`` names a training optimizer (``invphys.learn.OPTIMIZERS``): ``adam`` is the
papers' protocol; the Gauss-Newton family plugs in by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import SpecError

#: Activations of the affine Deceptron's s (its exact inverse is used in g).
ACTIVATIONS = ("identity", "leaky_relu")
#: Hidden activations of the MLP Deceptron.
MLP_ACTIVATIONS = ("silu", "tanh", "gelu", "softplus")
#: Probe distributions of the JCP estimator.
PROBES = ("gaussian", "rademacher")
#: Training optimizers selectable by name (``invphys train --optimizer``).
OPTIMIZER_NAMES = ("adam", "sgd", "gn", "gn-layerwise", "sgn")
DTYPES = ("float64", "float32")


def positive(v: Any) -> str | None:
    vals = v if isinstance(v, tuple) else (v,)
    return None if all(x > 0 for x in vals) else "must be > 0"


def nonnegative(v: Any) -> str | None:
    vals = v if isinstance(v, tuple) else (v,)
    return None if all(x >= 0 for x in vals) else "must be >= 0"


def unit_interval(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def setting(default: Any, *, choices: tuple | None = None,
            check: Callable[[Any], str | None] | None = None, doc: str = "") -> Any:
    """A config field with its schema: allowed values, a value check, documentation."""
    return dataclasses.field(default=default,
                             metadata={"choices": choices, "check": check, "doc": doc})


def field_kind(f: dataclasses.Field) -> type:
    """The scalar type of a config field (``float | None`` fields are floats)."""
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    for kind in (bool, int, float, str):
        if ann.split("|")[0].strip() == kind.__name__:
            return kind
    raise TypeError(f"config field {f.name} has an unsupported type {ann!r}")


class SpecConfig:
    """Shared plumbing of the configs: built from a spec's ``[train]`` section or a
    mapping (unknown keys are a SpecError), validated from the fields' metadata."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices is not None and value not in choices:
                raise SpecError(f"train.{f.name} must be one of {choices}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(f"train.{f.name} must be finite, got {value!r}")
            msg = check(value) if check is not None else None
            if msg:
                raise SpecError(f"train.{f.name} {msg}, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SpecError(f"unknown train key(s) for {cls.__name__}: {', '.join(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_spec(cls, spec):
        """The ``[train]`` section of a validated :class:`invphys.Spec`."""
        return cls.from_dict(spec["train"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class TrainConfig(SpecConfig):
    """Every Deceptron training hyperparameter; the field names are the keys of ``[train]``.

    Defaults are the paper's protocol for the affine Deceptron (Adam 5e-4, batch 128,
    60 epochs, clip 0.5, seed 0, ridge lambda 1e-4, the protocol's loss weights, JCP
    1e-3 with the 20%/80% trigger-and-ramp schedule, 2 Gaussian probes).

    ``jcp_trigger=None`` means the protocol's threshold: 0.07 for the linear-activation
    affine model, 0.6 for a nonlinear one (LeakyReLU or MLP). ``lr_schedule="cosine"``
    decays the learning rate to ``lr * lr_final`` over the run. ``w_sup`` weights an
    optional supervised inverse term MSE(g(z), x) (0 in the protocol).
    """

    model: str = setting("linear", choices=("linear", "mlp"),
                         doc="affine Deceptron (paper) or MLP pair")
    epochs: int = setting(60, check=positive)
    batch_size: int = setting(128, check=positive)
    optimizer: str = setting("adam", choices=OPTIMIZER_NAMES,
                             doc="training optimizer (adam: the protocol)")
    lr: float = setting(5e-4, check=positive, doc="learning rate (adam, sgd)")
    lr_schedule: str = setting("constant", choices=("constant", "cosine"))
    lr_final: float = setting(0.0, check=nonnegative,
                              doc="cosine: final learning rate as a fraction of lr")
    clip_norm: float = setting(0.5, check=positive, doc="gradient global-norm clip")
    seed: int = setting(0, check=nonnegative)
    dtype: str = setting("float64", choices=DTYPES)
    # affine Deceptron
    activation: str = setting("identity", choices=ACTIVATIONS,
                              doc="affine model: s (its exact inverse is used in g)")
    leaky_slope: float = setting(0.1, check=positive)
    tie_v: bool = setting(False, doc="affine model: tie V = W^T (ablation)")
    ridge_lambda: float = setting(1e-4, check=nonnegative,
                                  doc="ridge lambda of the W and V initialisation")
    # MLP Deceptron
    width: int = setting(256, check=positive, doc="MLP hidden width")
    depth: int = setting(3, check=positive, doc="MLP hidden layers")
    mlp_activation: str = setting("silu", choices=MLP_ACTIVATIONS)
    # loss weights
    w_fit: float = setting(1.0, check=nonnegative, doc="MSE(f(x), z)")
    w_rec: float = setting(0.1, check=nonnegative, doc="MSE(g(f(x)), x)")
    w_cyc: float = setting(0.05, check=nonnegative, doc="MSE(f(g(z)), z)")
    w_spectral: float = setting(1e-6, check=nonnegative, doc="mean((W^T W - I)^2)")
    w_bias: float = setting(1e-4, check=nonnegative, doc="soft bias tie")
    w_comp: float = setting(1e-3, check=nonnegative, doc="mean((V W - I)^2)")
    w_sup: float = setting(0.0, check=nonnegative,
                           doc="optional supervised inverse term MSE(g(z), x)")
    # Jacobian Composition Penalty
    jcp: bool = setting(True, doc="use the Jacobian Composition Penalty")
    jcp_weight: float = setting(1e-3, check=nonnegative,
                                doc="final JCP weight (ramped from 0.2x)")
    jcp_trigger: float | None = setting(
        None, check=positive,
        doc="val MSE that switches JCP on (default 0.07 linear, 0.6 nonlinear)")
    jcp_start: float = setting(0.2, check=unit_interval, doc="earliest JCP epoch / epochs")
    jcp_ramp_end: float = setting(0.8, check=unit_interval,
                                  doc="end of the JCP ramp / epochs")
    jcp_probes: int = setting(2, check=positive, doc="probes per sample")
    probe: str = setting("gaussian", choices=PROBES)
    rjcp_probes: int = setting(1, check=positive,
                               doc="probes of the per-epoch RJCP diagnostic")

    def __post_init__(self):
        super().__post_init__()
        if not self.jcp_start <= self.jcp_ramp_end:
            raise SpecError("train: need 0 <= jcp_start <= jcp_ramp_end <= 1")

    @property
    def trigger(self) -> float:
        """The validation-MSE threshold that switches JCP on."""
        if self.jcp_trigger is not None:
            return self.jcp_trigger
        return 0.07 if self.model == "linear" and self.activation == "identity" else 0.6

    @property
    def start_epoch(self) -> int:
        return int(round(self.jcp_start * self.epochs))

    @property
    def ramp_end_epoch(self) -> int:
        return int(round(self.jcp_ramp_end * self.epochs))


@dataclasses.dataclass(frozen=True)
class NetTrainConfig(SpecConfig):
    """Every DeceptronNet training hyperparameter (the keys of deblur2d's ``[train]``).

    Defaults are the protocol: Adam 2e-3, batch 64, 12 epochs, seed 0, the v0 network
    (32 channels, 6 unrolled steps, UNet depth 2), data-term weight 0.1, float32.
    """

    epochs: int = setting(12, check=positive)
    batch_size: int = setting(64, check=positive)
    optimizer: str = setting("adam", choices=OPTIMIZER_NAMES,
                             doc="training optimizer (adam: the protocol)")
    lr: float = setting(2e-3, check=positive, doc="learning rate (adam, sgd)")
    seed: int = setting(0, check=nonnegative, doc="weights and shuffling")
    channels: int = setting(32, check=positive, doc="UNet width (every level)")
    steps: int = setting(6, check=positive, doc="unrolled correction steps")
    depth: int = setting(2, check=positive, doc="UNet downsamplings")
    data_weight: float = setting(0.1, check=nonnegative,
                                 doc="weight of MSE(A_true(x_hat), y) beside MSE(x_hat, x)")
    dtype: str = setting("float32", choices=DTYPES)

    @property
    def net_kwargs(self) -> dict[str, int]:
        return {"channels": self.channels, "steps": self.steps, "depth": self.depth}
