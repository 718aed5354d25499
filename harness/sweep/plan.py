"""The planned runs of a sweep and the sweep's directory.

Planning resolves every point of a grid (``plan_runs``) or every measured cell of a table spec
(``table_runs``); a run is keyed by config hash and seed, so one planned twice runs once.

A sweep lives in ``<runs>/sweeps/<name>/``:

- ``plan.json``: every run of the sweep (method, benchmark, seed, overrides, config hash) and its
  run directory, fixed when the run is first planned so that a requeued task resumes the same
  directory. Written atomically, only by ``harness sweep`` (under ``.lock``).
- ``submissions/NNNN-<job>.json``: one file per submission: executor, sbatch settings, and the job
  id of each submitted run.
- ``logs/<job id>/``: submitit's pickles and each task's stdout/stderr.
"""

from __future__ import annotations

import itertools
import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import files
from harness.errors import ConfigError, HarnessError
from harness.overrides import Overrides
from harness.provenance import now
from harness.sweep.grid import SweepSpec

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


@dataclass
class Run:
    """One planned run: what to run and where its record goes."""

    key: str  # <config hash>-s<seed>
    label: str
    method: str
    benchmark: str
    seed: int
    overrides: dict  # dotted key → value (``Overrides``), as resolve takes them
    config_hash: str
    run_dir: str
    threads: int = 0  # torch threads for this run (0: the task's); reproduce sets the stored run's
    bench_file: str = ""  # the benchmark's file, for benchmarks defined outside the harness
    kernels: dict | None = None  # CPU kernel pins (harness/kernels.py), a replayed record's; None: ``level``'s
    level: str = "portable"  # the configuration's train.kernels


def add_runs(
    runs: dict[str, Run],
    label: str,
    method: str,
    bench: str,
    overrides: dict,
    seeds: list[int],
    untrained_seeds: list[int] | None = None,
) -> list[str]:
    """Resolve one point (unknown names, bad values and missing datasets raise the runner's own
    message) and add a run per seed to ``runs``, keyed by config hash and seed (a key already there
    stays); returns the point's keys. ``label`` names the point; a method that does not train gets
    ``untrained_seeds`` if given. Run directories are assigned later (``assign_run_dirs``)."""
    from harness.resolve import check_data, resolve
    from harness.settings import config_hash

    resolved = resolve(method, bench, overrides=overrides)
    check_data(resolved)
    digest = config_hash(resolved.config)
    if untrained_seeds is not None and not resolved.method_class.trains:
        seeds = untrained_seeds
    for seed in seeds:
        key = f"{digest}-s{seed}"
        runs.setdefault(
            key,
            Run(
                key,
                f"{label} seed {seed}",
                method,
                resolved.config.benchmark,
                seed,
                overrides,
                digest,
                "",
                bench_file=resolved.benchmark.spec.source,
                level=resolved.config.train.kernels,
            ),
        )
    return [f"{digest}-s{seed}" for seed in seeds]


def plan_runs(spec: SweepSpec) -> list[Run]:
    """Every run of the grid, each point validated (an error names the point). A grid of more than
    MAX_SWEEP_RUNS runs is refused before anything is resolved."""
    from harness.config import MAX_SWEEP_RUNS

    settings = spec.grid.size()
    size = len(spec.methods) * len(spec.benches) * settings * len(spec.seeds)
    if size > MAX_SWEEP_RUNS:
        raise ConfigError(
            f"the sweep's grid is {size:,} runs ({len(spec.methods)} methods × {len(spec.benches)} "
            f"benchmarks × {settings} settings × {len(spec.seeds)} seeds), and one sweep plans at most "
            f"{MAX_SWEEP_RUNS:,}; split it into smaller sweeps"
        )
    varying = spec.grid.varying()  # labels name only what differs between runs
    runs: dict[str, Run] = {}
    for method, bench in itertools.product(spec.methods, spec.benches):
        for setting in spec.grid.points():
            label = " ".join([method, bench, *(f"{k}={setting[k]}" for k in varying)])
            try:
                add_runs(runs, label, method, bench, dict(spec.base.merged(setting)), spec.seeds)
            except HarnessError as exc:
                point = " ".join([method, bench, *(f"{k}={v}" for k, v in setting.items())])
                exc.args = (f"cannot plan {point}: {exc}",)
                raise
    return list(runs.values())


def table_runs(spec, rows: list[str] | None = None, rungs: list[int] | None = None) -> list[Run]:
    """Every run a table spec's measured cells need, at each of its ladder rungs: each row × column, with
    the row's and the column's config filters as settings, and the row's seeds (else the spec's) for
    methods that train (seed 0 else). ``rows`` (labels) and ``rungs`` (multiples, 1: the table) keep only those."""
    from harness.benchmarks import reference
    from harness.report.spec import merge_where, rung_specs
    from harness.report.spec_fields import check_row_labels

    tables = [spec, *rung_specs(spec)]
    check_row_labels(rows or [], [row.label for row in spec.rows], f"--rows ({spec.path})")
    multiples = [table.multiple for table in tables]
    for multiple in rungs or []:
        if multiple not in multiples:
            raise ConfigError(
                f"--rungs: {spec.path} has no rung ×{multiple}; its rungs: {', '.join(map(str, multiples))} "
                "(1 is the table itself, the others its ladder's multiples)"
            )
    runs: dict[str, Run] = {}
    for table in tables:
        if rungs and table.multiple not in rungs:
            continue
        rung = f" ×{table.multiple}" if table.multiple > 1 else ""
        for row in table.rows:
            if rows and row.label not in rows:
                continue
            for column in table.columns:
                overrides = dict(Overrides(merge_where(row, column, table.path)).grouped())
                add_runs(
                    runs,
                    f"{row.label}{rung} | {column.label}",
                    row.method,
                    reference(column.benchmark, column.source),
                    overrides,
                    list(row.seeds or table.seeds),
                    untrained_seeds=[0],
                )
    return list(runs.values())


class Sweep:
    """A sweep's directory: its plan, its submissions and its logs."""

    def __init__(self, runs_dir: Path, name: str, evidence: Path | None = None):
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"sweep name '{name}' must be letters, digits and . _ + - (at most 100, "
                f"starting with a letter or digit)"
            )
        self.name, self.runs_dir = name, Path(runs_dir).absolute()
        self.dir = self.runs_dir / "sweeps" / name
        self.plan_path = self.dir / "plan.json"
        self.submissions_dir = self.dir / "submissions"
        self.logs_folder = self.dir / "logs" / "%j"  # submitit's folder; %j becomes the job id
        self.evidence = evidence  # sweep --table: the table's committed runs, finished without a re-run

    def exists(self) -> bool:
        return self.plan_path.is_file()

    def runs(self) -> list[Run]:
        if not self.exists():
            return []
        return [Run(**r) for r in self.read_plan()["runs"]]

    def read_plan(self) -> dict:
        """``plan.json``, or one error naming it when it is damaged."""
        try:
            plan = json.loads(self.plan_path.read_text(encoding="utf-8"))
            [Run(**r) for r in plan["runs"]]
            return plan
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HarnessError(
                f"{self.plan_path} is damaged ({type(exc).__name__}); it lists the sweep's runs: "
                f"restore it, or remove {self.dir} and submit the sweep again (finished runs are "
                "skipped)"
            ) from None

    def save_plan(self, runs: list[Run], grid: dict) -> None:
        created = self.read_plan().get("created", now()) if self.exists() else now()
        files.write_json(
            self.plan_path,
            {
                "name": self.name,
                "created": created,
                "updated": now(),
                "last_grid": grid,
                "runs": [asdict(r) for r in runs],
            },
        )

    def submissions(self) -> list[dict]:
        if not self.submissions_dir.is_dir():
            return []
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.submissions_dir.glob("*.json"))]

    def save_submission(self, submission: dict) -> None:
        number = len(list(self.submissions_dir.glob("*.json"))) if self.submissions_dir.is_dir() else 0
        first_job = next(iter(submission["jobs"].values()))
        files.write_json(self.submissions_dir / f"{number:04d}-{first_job}.json", submission)

    def latest_jobs(self) -> dict[str, dict]:
        """Run key → its latest job: {job_id, executor, submitted, host, log}."""
        latest = {}
        for sub in self.submissions():
            for key, job_id in sub["jobs"].items():
                latest[key] = {
                    "job_id": job_id,
                    "executor": sub["executor"],
                    "submitted": sub["submitted"],
                    "host": sub["host"],
                    "log": str(task_log(sub["logs_folder"], job_id)),
                }
        return latest

    def finished(self) -> dict[tuple[str, int], dict]:
        """(config hash, seed) → the newest ``ok`` record under the runs directory or, for a table's
        sweep, in the table's committed evidence (named now, or when the plan was saved)."""
        from harness.store import RunStore

        evidence = self.evidence or (self.read_plan()["last_grid"].get("evidence") if self.exists() else None)
        return RunStore(self.runs_dir, *([Path(evidence)] if evidence else [])).finished()

    @contextmanager
    def locked(self):
        """One ``harness sweep`` at a time per sweep (plan and submissions stay consistent)."""
        with files.locked(self.dir / ".lock"):
            yield


def task_log(logs_folder: str, job_id: str) -> Path:
    """The stderr file submitit writes for a job (``<folder>/<job>_0_log.err``)."""
    from submitit.core.utils import JobPaths

    return JobPaths(logs_folder, job_id=job_id, task_id=0).stderr


def new_run_dir(sweep: Sweep, run: Run) -> str:
    """A fresh run directory for ``run`` in the sweep's runs directory."""
    from harness import rundir

    return str(rundir.new_run_dir(sweep.runs_dir, run.method, run.benchmark, run.seed, run.config_hash))


def assign_run_dirs(sweep: Sweep, grid_runs: list[Run], finished: dict) -> list[Run]:
    """Fix each run's directory: the one already in the plan, else the finished record's, else a
    new one. Returns the merged plan (earlier runs first); ``grid_runs`` are updated in place."""
    planned = {r.key: r for r in sweep.runs()}
    for run in grid_runs:
        if run.key in planned:
            run.run_dir = planned[run.key].run_dir
        elif (run.config_hash, run.seed) in finished:
            run.run_dir = finished[(run.config_hash, run.seed)]["run_dir"]
        else:
            run.run_dir = new_run_dir(sweep, run)
        planned[run.key] = run
    return list(planned.values())
