"""Decoding the public dataset pickles (miniImageNet, tieredImageNet, FC100) without running code.

``pickle.load`` calls whatever global a file names, so a doctored file runs its payload when loaded.
:func:`load_pickle` admits only the globals these files need: numpy arrays, dtypes and scalars
(under both numpy 1's ``numpy.core`` and numpy 2's ``numpy._core`` names), and a few harmless
builtins (``set``, ``frozenset``, ``complex``, ``bytearray``, ``collections.OrderedDict``, and
``_codecs.encode``, which protocol-2 pickles use for bytes). Lists, dicts, strings and numbers need
no global. Any other global is refused before anything is called.
"""

from __future__ import annotations

import io
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.data.integrity import RawFileError

ADMITTED = "numpy arrays, lists, dicts, strings and numbers"


@lru_cache(maxsize=1)
def _allowed() -> dict[tuple[str, str], Any]:
    """(module, name) → the object it stands for, for every global a dataset pickle may name."""
    import codecs
    import collections

    import numpy as np

    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
    scalar = np.int64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 builds contiguous arrays with _frombuffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    for builtins in ("builtins", "__builtin__"):  # Python 3 and Python 2 pickles
        for value in (set, frozenset, complex, bytearray):
            allowed[(builtins, value.__name__)] = value
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :func:`_allowed`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


class _Refused(Exception):
    """A global outside the allowed set (internal: :func:`load_pickle` turns it into RawFileError)."""


def load_pickle(source: Path | bytes, label: str = "", encoding: str = "ASCII") -> Any:
    """Unpickle a dataset file (a path, or its bytes with ``label`` naming it) without running code.

    Raises RawFileError naming the file when it asks for any other global, or is truncated or corrupt.
    """
    label = label or str(source)
    try:
        if isinstance(source, bytes):
            return _RestrictedUnpickler(io.BytesIO(source), encoding=encoding).load()
        with open(source, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding=encoding).load()
    except _Refused as refused:
        raise RawFileError(
            label,
            (
                f"refused to unpickle the global '{refused}': dataset pickles hold only {ADMITTED}, and loading "
                "any other global could run code from the file (nothing was run). It is not the published file"
            ),
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise RawFileError(
            label, f"not a readable pickle: truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from None
