"""Few-shot / self-supervised benchmark harness.

Methods live in ``harness.methods`` (the repository's ``methods/`` folder), benchmark protocol
definitions in ``harness.benchmarks`` (``benchmarks/``). Importing this package is cheap: heavy
libraries (torch, learn2learn, lightly, pandas) are imported only by the code that needs them.

For notebooks: ``harness.load_runs``, ``harness.leaderboard`` and ``harness.table`` (``harness/api.py``),
loaded on first use.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["load_runs", "leaderboard", "table"]


def __getattr__(name: str):
    """The notebook API's functions, imported from ``harness.api`` when first asked for (PEP 562)."""
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
