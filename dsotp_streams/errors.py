"""One root error for the project, grouped by what a caller can act on."""

from __future__ import annotations

__all__ = [
    "ConvergenceError",
    "CursorError",
    "DsotpError",
    "FrameError",
    "ModelError",
    "NotObservableError",
    "SinkRejectedError",
    "SpecError",
    "TransportError",
]


class DsotpError(Exception):
    """Root of every error raised by dsotp-streams."""


class FrameError(DsotpError):
    """A frame could not be decoded or validated; the message says which field and why."""


class SpecError(DsotpError):
    """An agent spec is invalid or names something the grid model does not have."""


class ModelError(DsotpError):
    """A grid model could not be loaded or converted."""


class NotObservableError(DsotpError):
    """The measurements of a window do not make the grid observable."""


class ConvergenceError(DsotpError):
    """An iterative solver (power flow or estimation) did not converge."""


class TransportError(DsotpError):
    """A broker or network connection failed."""


class SinkRejectedError(DsotpError):
    """A database refused the data (malformed points, schema conflict): a retry would not help."""


class CursorError(DsotpError):
    """A page cursor that this API did not issue."""


class TopologyError(DsotpError):
    """A switch change that cannot be applied: unknown switch, or a grid it would leave
    unestimable."""
