"""The one "shipped model or train" resolver of experiments and benchmarks.

    models = resolve_models_dir(args.models)          # --models DIR, or the default
    store = ModelStore(models, out)
    ck, how = store.deceptron(spec, dataset, config, "heat1d-linear")
    ck, how = store.deceptronnet(spec, "deceptronnet-v0-c8-e6")

A model ``NAME`` is looked up in ``MODELS/NAME`` (the shipped weights and card), then in
``OUT/models/NAME`` (an earlier run's training); the first that loads *and* was trained
for the same problem, data and configuration is used, else it is trained into
``OUT/models/NAME``. ``how`` says which ("loaded models/NAME" or "trained NAME (12 s)").

The models folder is explicit: ``--models DIR``. Its default is the checkout's
``models/``: the one beside the source tree when invphys runs from a checkout (an
editable install), else ``./models`` in the working directory. An installed wheel
has neither unless run from a checkout; then :func:`resolve_models_dir` raises
:class:`invphys.InputFileError` naming ``--models`` (the CLI prints it as one line).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._errors import InputFileError, InvphysError
from ..learn import (
    load_checkpoint,
    load_net_checkpoint,
    matches,
    train_deceptron,
    train_net_from_spec,
)

MODELS_OPTION = "--models DIR"


def _checkout_root() -> Path | None:
    """The source checkout this module runs from (a folder holding ``pyproject.toml``
    and the ``invphys`` package), or None (an installed wheel: site-packages)."""
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "invphys").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
        if folder.name in ("site-packages", "dist-packages"):
            return None
    return None


def default_models_dir() -> Path | None:
    """The checkout's ``models/`` (beside the source tree, else in the working
    directory), or None when neither exists."""
    root = _checkout_root()
    for cand in ((root / "models") if root else None, Path.cwd() / "models"):
        if cand is not None and cand.is_dir():
            return cand.resolve()
    return None


def resolve_models_dir(models: str | Path | None = None) -> Path:
    """The models folder to read shipped checkpoints from: ``models`` if given (it must
    be a folder), else :func:`default_models_dir`; raises :class:`InputFileError`
    (one line, naming ``--models``) when there is none."""
    if models is not None:
        path = Path(models).expanduser()
        if not path.is_dir():
            raise InputFileError(f"models folder {path} does not exist (pass "
                                 f"{MODELS_OPTION}: the checkout's models/)")
        return path.resolve()
    found = default_models_dir()
    if found is None:
        raise InputFileError(f"no models folder found (no models/ in the checkout or in "
                             f"{Path.cwd()}): pass {MODELS_OPTION}, e.g. the checkout's "
                             "models/")
    return found


def describe(folder: Path, models: Path | None) -> str:
    """A short name for a model folder: relative to the models folder's parent (so
    ``models/NAME``), else to the working directory, else absolute."""
    folder = Path(folder).resolve()
    for base in ((models.resolve().parent,) if models is not None else ()) + (Path.cwd(),):
        try:
            return str(folder.relative_to(base))
        except ValueError:
            continue
    return str(folder)


def get_or_train(name: str, *, load: Callable[[Path], Any], train: Callable[[Path], Any],
                 models: Path | None, out: Path) -> tuple[Any, str]:
    """``(checkpoint, how)``: ``load(MODELS/name)``, else ``load(OUT/models/name)``, else
    ``train(OUT/models/name)``. ``load`` raises an :class:`invphys.InvphysError` (or
    OSError) when the folder is missing, corrupt or does not match what is asked."""
    folders = ([Path(models) / name] if models is not None else []) + \
        [Path(out) / "models" / name]
    for folder in folders:
        try:
            ck = load(folder)
        except (InvphysError, OSError):  # missing, corrupt or mismatched: try the next
            continue
        return ck, f"loaded {describe(folder, models)}"
    t0 = time.perf_counter()
    ck = train(Path(out) / "models" / name)
    return ck, f"trained {name} ({time.perf_counter() - t0:.0f} s)"


class ModelMismatch(InvphysError):
    """A checkpoint loads but was trained on other data or with another configuration."""


@dataclasses.dataclass(frozen=True)
class ModelStore:
    """Where an experiment run finds (``models``) and trains (``out/models``) models."""

    models: Path | None
    out: Path
    progress: bool = False

    def deceptron(self, spec, dataset, config, name: str) -> tuple[Any, str]:
        """A Deceptron checkpoint for ``spec`` trained on ``dataset`` with ``config``
        (:class:`invphys.learn.TrainConfig`)."""
        def load(folder: Path):
            ck = load_checkpoint(folder, spec)
            if not matches(ck, config, dataset.digest()):
                raise ModelMismatch(f"{folder} was trained on other data or settings")
            return ck

        def train(folder: Path):
            return train_deceptron(dataset, config, spec=spec, out=folder, overwrite=True,
                                   progress=self.progress)

        return get_or_train(name, load=load, train=train, models=self.models, out=self.out)

    def deceptronnet(self, spec, name: str) -> tuple[Any, str]:
        """A DeceptronNet checkpoint trained for ``spec`` (same physics, prior, noise,
        data and train sections)."""
        def train(folder: Path):
            return train_net_from_spec(spec, out=folder, overwrite=True,
                                       progress=self.progress)

        return get_or_train(name, load=lambda f: load_net_checkpoint(f, spec), train=train,
                            models=self.models, out=self.out)

    def shipped_deceptronnet(self, spec, name: str) -> str | None:
        """None when ``MODELS/name`` loads and matches ``spec`` (no training needed), else
        why not (one line)."""
        if self.models is None:
            return "no models folder"
        try:
            load_net_checkpoint(Path(self.models) / name, spec)
        except (InvphysError, OSError) as e:
            return str(e)
        return None
