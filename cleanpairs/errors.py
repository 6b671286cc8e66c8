"""The errors cleanpairs raises. The CLI turns each into one line on stderr and exit code 2."""

from __future__ import annotations


class CleanpairsError(Exception):
    """Base class of every error cleanpairs raises on purpose."""


class InputError(CleanpairsError):
    """The input corpus or a file given by the user cannot be used as it is."""


class ParameterError(CleanpairsError, ValueError):
    """A method, encoder or command option has a value outside what it accepts."""


class EncoderError(CleanpairsError):
    """An encoder cannot be built or run (unknown id, missing checkpoint, no network)."""


class NotFittedError(CleanpairsError):
    """A method's results were asked for before ``fit`` was called."""
