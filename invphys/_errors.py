"""Typed exceptions. Every error a user can trigger with bad input is one of these.

The CLI turns any :class:`InvphysError` into one line on stderr and a non-zero exit;
library users catch the specific subclass they care about.
"""


class InvphysError(Exception):
    """Base class of all errors raised by invphys on bad input."""


class SpecError(InvphysError, ValueError):
    """An experiment specification is missing, unreadable, or invalid, or a setting that
    stands for a spec key (a CLI option, a :class:`~invphys.solve.Rules` or
    ``least_squares`` argument) is out of range; the message names the key or argument.
    A ``ValueError`` too, so ``except ValueError`` keeps working."""


class ShapeError(InvphysError, ValueError):
    """An array has the wrong shape for the problem it is used with."""


class NonFiniteError(InvphysError, ValueError):
    """An input (observation, start, parameter) contains NaN or inf."""


class BoundsError(InvphysError, ValueError):
    """Bounds are inconsistent (lower > upper) or do not match the problem."""


class CheckpointError(InvphysError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the problem or model."""


class InputFileError(InvphysError, FileNotFoundError):
    """A file given by the user does not exist or cannot be read."""
