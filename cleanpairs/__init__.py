"""cleanpairs: find and fix mismatched image-caption pairs in image-text corpora."""

__version__ = "0.1.0"

from cleanpairs.errors import CleanpairsError, InputError, ParameterError

__all__ = ["CleanpairsError", "InputError", "ParameterError", "__version__"]
