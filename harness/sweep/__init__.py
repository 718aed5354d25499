"""Sweeps: grids of methods × benchmarks × settings × seeds, launched with submitit as one SLURM job
array (or as background worker processes on this machine), with requeue/resume, skip-finished and
``harness status``.

- ``grid``: the grid of one ``harness sweep`` (flags and sweep files);
- ``plan``: the planned runs and a sweep's directory (``plan.json``, submissions, logs);
- ``profiles``: SLURM profiles and the choice of executor;
- ``task``: what one submitted job runs;
- ``status``: where each run stands (records, submissions, the scheduler) and ``harness status``;
- ``submit``: planning into a sweep, submitting, ``--dry-run`` and ``--wait``;
- ``commands``: the ``harness sweep`` and ``harness status`` commands.

``harness --help`` imports ``commands`` and what it imports: heavy modules (torch, submitit, the
runner) are imported inside the functions that use them.
"""
