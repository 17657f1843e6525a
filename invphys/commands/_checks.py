"""Checks every command runs before any work: option ranges and paths.

A bad value is a :class:`~invphys.SpecError` (an option overrides a spec key) naming
the option; a bad path an :class:`~invphys.InputFileError` or
:class:`invphys._io.OutputError` naming it. The CLI prints either as one line, exit 2.
"""

from __future__ import annotations

import math
from typing import Any

from .._errors import SpecError


def at_least(option: str, value: Any, low: int) -> None:
    """An integer option (None: not given) must be >= ``low``."""
    if value is not None and value < low:
        raise SpecError(f"{option} must be >= {low}, got {value}")


def positive_finite(option: str, value: Any) -> None:
    """A float option (None: not given) must be a finite number > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise SpecError(f"{option} must be a finite number > 0, got {value}")
