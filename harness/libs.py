"""Imports of the optional-to-build method libraries, with the fix in the error message."""

from __future__ import annotations

import contextlib
import io

from harness.errors import HarnessError

LEARN2LEARN_BUILD = (
    "python -m pip install 'cython>=3' setuptools && "
    "python -m pip install --no-deps --no-build-isolation -C--global-option=build_ext learn2learn==0.2.0"
)


def learn2learn():
    """``import learn2learn``, silencing gym's import-time notice; a clear error if it is not built."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import learn2learn
    except ImportError as exc:
        raise HarnessError(
            f"learn2learn is not installed ({exc}). Its 0.2.0 sdist needs its C sources regenerated on "
            f"Python 3.11; build it with `make install` or:\n  {LEARN2LEARN_BUILD}"
        ) from None
    return learn2learn
