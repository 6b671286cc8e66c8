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


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name where it has none.

    Messages from pyarrow and PIL run to several lines; the CLI shows one.
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
