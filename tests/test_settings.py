"""One settings schema (harness/settings.py): every committed run reads back, resolves again and
hashes through it; an added key belongs to the dataclass that declares it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.report.selection import CONFIG_ALIASES, RECORD_FIELDS, UNCOMPARED, check_where, read_settings
from harness.resolve import resolve
from harness.settings import SCHEMA, canonical, config_hash, derived_hash, flatten, stored_form, stored_overrides
from harness.store import RunStore, read_config

RESULTS = Path(__file__).resolve().parents[1] / "results" / "runs"
COMMITTED = [r for d in sorted(RESULTS.iterdir()) if d.is_dir() for r in RunStore(d)]


def test_committed_runs_exist():
    assert len(COMMITTED) >= 60


@pytest.mark.parametrize("record", COMMITTED, ids=lambda r: Path(r["run_dir"]).name)
def test_every_committed_run_reads_back_as_the_canonical_form_of_its_resolved_configuration(record):
    tree = read_config(Path(record["run_dir"]))
    resolved = resolve(tree["method_name"], tree["benchmark"], overrides=stored_overrides(tree)).config
    if record["kind"] == "eval":  # its hash covers its source run's (committed beside it) and its own
        (source,) = [r for r in COMMITTED if r["run_id"] == record["source_run"]]
        assert derived_hash(source["config_hash"], resolved) == record["config_hash"]
    else:
        assert config_hash(resolved) == record["config_hash"]
    expected = flatten(canonical(resolved.to_dict()))
    for key in (*UNCOMPARED, *CONFIG_ALIASES):
        expected.pop(key, None)
    settings = {k: v for k, v in read_settings(record).items() if k not in RECORD_FIELDS}
    assert settings == expected
    assert "method.meta_batch" not in settings  # renamed train.batch_size for ProtoNet; never a key of the others


def test_an_added_key_is_hashed_only_when_set_otherwise_and_only_for_its_method():
    base = resolve("maml", "synthetic-5w1s").config
    tree = base.to_dict()
    del tree["train"]["clip_grad_norm"]  # stored before the key existed
    again = resolve("maml", "synthetic-5w1s", overrides=stored_overrides(tree)).config
    assert again.train.clip_grad_norm == 0 and config_hash(again) == config_hash(base)
    assert config_hash(resolve("maml", "synthetic-5w1s", sets=["train.clip_grad_norm=1"]).config) != config_hash(base)
    simclr = canonical(resolve("simclr", "synthetic-5w1s").config.to_dict())
    assert "backbone" in simclr["method"] and "min_scale" in simclr["views"] and "min_scale" not in simclr["method"]


def old_protonet_tree(**method) -> dict:
    """A ProtoNet config.yaml as stored before train.batch_size meant its episodes per step (schema 0)."""
    tree = resolve("protonet", "synthetic-5w1s").config.to_dict()
    tree["train"]["batch_size"] = 64  # TrainConfig's default, which ProtoNet did not read
    tree["method"].update(method)
    return tree


@pytest.mark.parametrize("stored, tasks", [({}, 1), ({"meta_batch": 1}, 1), ({"meta_batch": 4}, 4)])
def test_protonet_episodes_per_step_migrate_to_train_batch_size_and_keep_their_hash(stored, tasks):
    tree = old_protonet_tree(**stored)
    old_hash = config_hash(resolve("protonet", "synthetic-5w1s").config) if tasks == 1 else None
    again = resolve("protonet", "synthetic-5w1s", overrides=stored_overrides(tree)).config
    assert again.train.batch_size == tasks and not hasattr(again.method, "meta_batch")
    assert flatten(canonical(tree))["train.batch_size"] == tasks
    same = resolve("protonet", "synthetic-5w1s", sets=[f"train.batch_size={tasks}"]).config
    assert config_hash(again) == config_hash(same)
    if old_hash:
        assert config_hash(again) == old_hash
    written = stored_form(again)  # a tree written now names its schema and is not migrated again
    assert written["schema"] == SCHEMA and flatten(canonical(written))["train.batch_size"] == tasks


@pytest.mark.parametrize(
    "method, bench, tasks, old_hash",
    [
        # config_hash at 80e8ed7 of the same configurations set with method.meta_batch=<tasks>
        ("protonet", "synthetic-5w1s", 1, "529740505220"),
        ("protonet", "synthetic-5w1s", 4, "ae8bdc4a7f2c"),
        ("cactus-protonet", "omniglot-small1-20w1s-lake", 2, "a3715515169b"),
    ],
)
def test_episodes_per_step_hash_as_they_did_under_their_old_key(method, bench, tasks, old_hash):
    cfg = resolve(method, bench, sets=[f"train.batch_size={tasks}"]).config
    assert config_hash(cfg) == old_hash
    tree = stored_form(cfg)
    assert tree["train"]["batch_size"] == tasks and "meta_batch" not in tree["method"]


def test_a_renamed_key_is_one_error_naming_its_new_name():
    with pytest.raises(ConfigError, match="method.meta_batch is now train.batch_size"):
        resolve("protonet", "synthetic-5w1s", sets=["method.meta_batch=2"])
    with pytest.raises(ConfigError, match="method.meta_batch is now train.batch_size"):
        check_where({"method.meta_batch": 2}, "leaderboard")
    with pytest.raises(ConfigError, match="unknown config key 'method.meta_batch'"):
        resolve("simclr", "synthetic-5w1s", sets=["method.meta_batch=2"])  # never a key of SimCLR's


def test_the_views_migration_moves_view_keys_only_for_methods_with_views():
    old_simclr = {"method_name": "simclr", "benchmark": "synthetic-5w1s", "method": {"min_scale": 0.7}}
    assert canonical(old_simclr)["views"]["min_scale"] == 0.7 and "min_scale" not in canonical(old_simclr)["method"]
    protonet = {"method_name": "protonet", "benchmark": "synthetic-5w1s", "method": {"min_scale": 0.7}}
    assert canonical(protonet)["method"]["min_scale"] == 0.7 and "views" not in canonical(protonet)
