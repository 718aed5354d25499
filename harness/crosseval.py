"""``harness eval``: score a trained run's checkpoint on another benchmark or with another head.

The encoder keeps its input contract: the source run's image size and normalisation (target images
are resized to it; grey ↔ RGB is converted when the channel counts differ). The new record has
``kind: eval``, ``trained_on`` (the source benchmark) and ``source_run``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from harness import compute, rundir
from harness.benchmarks import get_benchmark, reference
from harness.catalog import HEADS
from harness.checkpoint import read_checkpoint
from harness.errors import HarnessError
from harness.protocol import Benchmark
from harness.resolve import check_head, resolve
from harness.runner import build_method, resolve_device, result_fields, score
from harness.settings import derived_hash, stored_form, stored_overrides
from harness.store import CHECKPOINT, read_config, read_record, write_scores


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 N×C×H×W → ``channels`` channels (grey repeated to RGB, RGB averaged to grey)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    return images.float().mean(1, keepdim=True).round().to(torch.uint8)


def evaluate_run(run_dir: Path, bench: str, head: str | None, runs_dir: Path, device: str = "auto") -> dict:
    """Score ``run_dir``'s final checkpoint on ``bench`` with ``head``; returns the new record. Everything
    is checked and loaded before the new run directory is made; a failure while scoring is recorded
    there as ``failed`` (like ``harness run``) and re-raised."""
    source = read_record(run_dir)
    if source is None:
        raise HarnessError(f"{run_dir} holds no run record (result.json); pass a run directory made by `harness run`")
    if source.get("status") != "ok":
        raise HarnessError(
            f"{run_dir} did not finish (status {source.get('status')}); resume it first with `harness run --resume`"
        )
    tree = read_config(run_dir)
    resolved = resolve(
        tree["method_name"],
        reference(tree["benchmark"], source.get("benchmark_file")),
        overrides=stored_overrides(tree),
    )
    target = Benchmark.of(get_benchmark(bench), resolved.config.data.root)
    head = head or source["head"]
    HEADS.get(head, "--head")
    check_head(resolved.method_class, head)

    cfg = copy.deepcopy(resolved.config)
    cfg.benchmark, cfg.bench = target.spec.name, target.spec.bench_config()
    cfg.eval.head = head
    cfg.data.holdout, cfg.data.train_fraction = "", 1.0
    torch_device = resolve_device(device)
    method = build_method(resolved, source["seed"], torch_device)
    if method.trains:
        fix = "score another run, or train this configuration again with `harness run` (without --resume)"
        method.load_state_dict(read_checkpoint(Path(run_dir) / CHECKPOINT, torch_device, fix)["model"])
    target.ensure_available()
    data = target.load(cfg, with_train=False)
    data.test.images = match_channels(data.test.images, method.env.channels)

    config_hash = derived_hash(source["config_hash"], cfg)
    out_dir = rundir.new_run_dir(Path(runs_dir), cfg.method_name, cfg.benchmark, source["seed"], config_hash)
    record = {
        k: v
        for k, v in rundir.base_record(resolved, source["seed"], out_dir, torch_device).items()
        if k not in ("benchmark_file", "benchmark_sha256")
    }  # the source's; the target's follow
    record.update(
        kind="eval",
        benchmark=cfg.benchmark,
        trained_on=source["benchmark"],
        source_run=source["run_id"],
        config_hash=config_hash,
        head=head,
        steps=source.get("steps"),
        train_seconds=source.get("train_seconds"),
        data=target.data_provenance(with_train=False),
        **target.provenance(),
    )
    with (
        rundir.locked(out_dir),
        rundir.lifecycle(out_dir, {**stored_form(cfg), "source_run": source["run_id"]}, record, torch_device),
    ):
        with compute.counting() as evaluation:
            result = score(method, cfg, data)
        write_scores(out_dir, result.accuracies, result.correct)
        record.update(result_fields(result, data.test_episodes.digest))
        record["flops"] = {**(source.get("flops") or {}), "eval": evaluation.total}  # training: the source's
    record["run_dir"] = str(out_dir)
    return record
