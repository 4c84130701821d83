"""User-facing errors.

Every error that a user can cause (a missing file, a wrong shape, an unknown name, a bad config value,
a corrupt checkpoint) is raised as a :class:`GenlabError` subclass with a message that says what was
wrong and what to do. The CLI prints the message and exits with status 2; it never shows a traceback
for these.
"""

from __future__ import annotations

import contextlib


class GenlabError(Exception):
    """Base class of every error caused by input the user gave."""


class ConfigError(GenlabError, ValueError):
    """A config key or value is invalid."""


class DataError(GenlabError, ValueError):
    """A data source is missing, unreadable, empty, of the wrong shape or dtype, or not finite."""


class CheckpointError(GenlabError):
    """A checkpoint or run directory is missing, incomplete, corrupt or does not match the model."""


class UnknownNameError(GenlabError, KeyError):
    """A name that is not registered; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@contextlib.contextmanager
def ode_solver_errors(what: str):
    """Turn torchdiffeq's step-size underflow (an ``AssertionError``) into a :class:`DataError`
    that says what happened: the adaptive solver met values it cannot integrate."""
    try:
        yield
    except AssertionError as e:
        if "underflow in dt" not in str(e):
            raise
        raise DataError(
            f"{what}: the adaptive ODE solver's step size underflowed (values far from anything "
            "the model was trained on, or a diverged model); check the data for extreme values"
        ) from e
