"""One settings schema (issue 27, harness/settings.py): every committed run reads back, resolves again and
hashes through it; an added key belongs to the dataclass that declares it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report.selection import RECORD_FIELDS, UNCOMPARED, CONFIG_ALIASES, read_settings
from harness.resolve import resolve
from harness.settings import canonical, config_hash, flatten, stored_overrides
from harness.store import RunStore, read_config

RESULTS = Path(__file__).resolve().parents[1] / "results" / "runs"
COMMITTED = [r for d in sorted(RESULTS.iterdir()) if d.is_dir() for r in RunStore(d)]


def test_committed_runs_exist():
    assert len(COMMITTED) >= 60


@pytest.mark.parametrize("record", COMMITTED, ids=lambda r: Path(r["run_dir"]).name)
def test_every_committed_run_reads_back_as_the_canonical_form_of_its_resolved_configuration(record):
    tree = read_config(Path(record["run_dir"]))
    resolved = resolve(tree["method_name"], tree["benchmark"], overrides=stored_overrides(tree)).config
    assert config_hash(resolved) == record["config_hash"]
    expected = flatten(canonical(resolved.to_dict()))
    for key in (*UNCOMPARED, *CONFIG_ALIASES):
        expected.pop(key, None)
    settings = {k: v for k, v in read_settings(record).items() if k not in RECORD_FIELDS}
    assert settings == expected
    if record["method"] in ("simclr", "bmssl", "maml"):
        assert "method.meta_batch" not in settings  # a ProtoNet key (added later) is no setting of theirs


def test_an_added_key_is_hashed_only_when_set_otherwise_and_only_for_its_method():
    base = resolve("protonet", "synthetic-5w1s").config
    tree = base.to_dict()
    del tree["method"]["meta_batch"]  # stored before the key existed
    again = resolve("protonet", "synthetic-5w1s", overrides=stored_overrides(tree)).config
    assert again.method.meta_batch == 1 and config_hash(again) == config_hash(base)
    assert config_hash(resolve("protonet", "synthetic-5w1s", sets=["method.meta_batch=2"]).config) != config_hash(base)
    simclr = canonical(resolve("simclr", "synthetic-5w1s").config.to_dict())
    assert "meta_batch" not in simclr["method"] and "min_scale" in simclr["views"]


def test_the_views_migration_moves_view_keys_only_for_methods_with_views():
    old_simclr = {"method_name": "simclr", "benchmark": "synthetic-5w1s", "method": {"min_scale": 0.7}}
    assert canonical(old_simclr)["views"]["min_scale"] == 0.7 and "min_scale" not in canonical(old_simclr)["method"]
    protonet = {"method_name": "protonet", "benchmark": "synthetic-5w1s", "method": {"min_scale": 0.7}}
    assert canonical(protonet)["method"]["min_scale"] == 0.7 and "views" not in canonical(protonet)
