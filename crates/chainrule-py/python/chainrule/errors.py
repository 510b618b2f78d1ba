"""chainrule's exceptions.

Every error of the library arrives as a subclass of :class:`Error` carrying the
library's one-line message unchanged; each also derives from the built-in exception
a Python user would catch for it (``ValueError`` for bad shapes and values,
``FileNotFoundError`` for a missing file), so ``except ValueError:`` works too.
"""

import builtins


class Error(Exception):
    """Base class of every chainrule error."""


class ShapeError(Error, ValueError):
    """An array's shape does not fit the model, the loss or the operation."""


class InvalidValueError(Error, ValueError):
    """A value is out of range, unknown (a loss, an optimizer, a field) or of the wrong type."""


class FormatError(Error, ValueError):
    """A file's contents are not what its format requires."""


class UnsupportedLayerError(Error, ValueError):
    """A PyTorch module has no chainrule layer (from_torch)."""


class FileNotFoundError(Error, builtins.FileNotFoundError):
    """A file or folder does not exist."""


class IOError(Error, OSError):
    """A file could not be read or written."""


class NonFiniteError(Error, ArithmeticError):
    """A non-finite loss, gradient or parameter appeared during training."""


class InternalError(Error):
    """A bug in chainrule: a Rust panic, caught at the boundary (please report it)."""


__all__ = [
    "Error",
    "ShapeError",
    "InvalidValueError",
    "FormatError",
    "UnsupportedLayerError",
    "FileNotFoundError",
    "IOError",
    "NonFiniteError",
    "InternalError",
]
