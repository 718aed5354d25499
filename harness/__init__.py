"""Few-shot / self-supervised benchmark harness.

Methods live in ``harness.methods`` (the repository's ``methods/`` folder), benchmark protocol
definitions in ``harness.benchmarks`` (``benchmarks/``). Importing this package is cheap: heavy
libraries (torch, learn2learn, lightly) are imported only by the code that needs them.
"""

__version__ = "0.1.0"
