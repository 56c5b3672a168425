"""The one exception type for bad input data, and the wording its messages share."""

import numpy as np


class DataError(ValueError):
    """Input data is missing, corrupt or not what it claims to be.

    The message names the file and, where they apply, the archive member, key and offending value,
    so that the user can find the problem without a debugger.
    """


def describe(value: object) -> str:
    """A short description of `value` for error messages: dtype and shape for arrays, else the type."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
