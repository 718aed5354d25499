"""Configuration: precedence, type checking, bounds, fixed settings, hashing, and CLI errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from harness.errors import ConfigError, UnknownNameError
from harness.overrides import Overrides
from harness.resolve import resolve
from harness.settings import config_hash

from conftest import one_error, run_cli

# The keys added to the shared groups after runs were recorded (declared with config.added on their fields)
ADDED_ABSENT = [
    ("train", k)
    for k in ("clip_grad_norm", "precision", "compile", "sync_batchnorm", "exact_batchnorm", "kernels", "budget_flops")
] + [("eval", k) for k in ("logreg_steps", "logreg_lr", "logreg_l2")]


def test_set_overrides_are_typed_and_win_over_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"steps": 7, "lr": 0.5}, "method": {"train_ways": 10}}))
    cfg = resolve("protonet", "synthetic-5w1s", config, ["train.lr=0.25", "eval.distance=cosine"]).config
    assert cfg.train.steps == 7 and cfg.train.lr == 0.25 and isinstance(cfg.train.lr, float)
    assert cfg.method.train_ways == 10 and cfg.eval.distance == "cosine"


def test_preset_layers_apply_family_then_benchmark():
    assert resolve("protonet", "omniglot-small1-20w1s-lake").config.method.train_ways == 60
    assert resolve("protonet", "omniglot-small1-20w1s-lake").config.data.class_rotations is True
    assert resolve("protonet", "miniimagenet-5w1s").config.method.train_ways == 30
    assert resolve("protonet", "miniimagenet-5w5s").config.method.train_ways == 20
    assert resolve("protonet", "synthetic-5w1s").config.data.class_rotations is False


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.steps=abc", "train.steps must be int, got 'abc'"),
        ("train.steps=1.5", "train.steps must be int"),
        ("train.steps=1e3x", "train.steps must be int"),
        ("train.lr=fast", "train.lr must be float"),
        ("data.class_rotations=3", "data.class_rotations must be bool"),
        ("eval.distance=manhattan", "one of 'euclidean', 'cosine'"),
        ("bench.shots=0", "bench.shots must be >= 1, got 0"),
        ("data.train_fraction=0", "data.train_fraction must be > 0"),
        ("data.train_fraction=1.5", "data.train_fraction must be <= 1"),
        ("bench.ways=65", "exceeds the 64 test classes of synthetic-5w1s"),
        ("bench.queries=20", "exceeds the 20 images per test class"),
    ],
)
def test_invalid_values_are_rejected_with_the_reason(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve("protonet", "synthetic-5w1s", sets=[item])


def test_unknown_names_list_valid_ones_and_the_closest():
    with pytest.raises(UnknownNameError) as err:
        resolve("protonet", "synthetic-5w1s", sets=["train.stepz=3"])
    assert err.value.closest == "train.steps" and "train.lr" in str(err.value)
    with pytest.raises(UnknownNameError, match="Did you mean 'protonet'"):
        resolve("protonett", "synthetic-5w1s")
    with pytest.raises(UnknownNameError, match="Did you mean 'synthetic-5w1s'"):
        resolve("protonet", "synthetic-5w1")
    with pytest.raises(UnknownNameError, match="unknown config group 'trian'"):
        resolve("protonet", "synthetic-5w1s", sets=["trian.steps=3"])
    with pytest.raises(
        UnknownNameError, match="unknown head 'protoype'.*Did you mean 'prototype'\\? Set eval.head to one of them"
    ):
        resolve("protonet", "synthetic-5w1s", sets=["eval.head=protoype"])
    with pytest.raises(UnknownNameError, match="unknown backbone 'conv5'.*Set method.backbone to one of them"):
        resolve("protonet", "synthetic-5w1s", sets=["method.backbone=conv5"])


def test_malformed_set_and_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="--set expects group.key=value"):
        Overrides.from_text(["steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        resolve("pixels", "synthetic-5w1s", tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("pixels", "synthetic-5w1s", bad)


def test_official_episodes_and_ablations_fix_their_settings():
    with pytest.raises(ConfigError, match="bench.ways is fixed at 20 on omniglot-small1-20w1s-lake"):
        resolve("pixels", "omniglot-small1-20w1s-lake", sets=["bench.ways=5"])
    with pytest.raises(ConfigError, match="method.first_order is fixed at True by maml-fo"):
        resolve("maml-fo", "synthetic-5w1s", sets=["method.first_order=false"])
    assert resolve("maml-fo", "synthetic-5w1s").config.method.first_order is True
    assert resolve("anil", "synthetic-5w1s").config.method.adapt == "head"


def test_hash_ignores_location_but_not_settings():
    base = config_hash(resolve("protonet", "synthetic-5w1s").config)
    assert config_hash(resolve("protonet", "synthetic-5w1s", sets=["data.root=/elsewhere"]).config) == base
    assert config_hash(resolve("protonet", "synthetic-5w1s", sets=["train.lr=0.01"]).config) != base
    assert config_hash(resolve("protonet", "synthetic-5w5s").config) != base
    code = "from harness.resolve import resolve; from harness.settings import config_hash; print(config_hash(resolve('protonet', 'synthetic-5w1s').config))"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == base


def test_cli_rejects_bad_input_before_any_work(runs_dir, capsys):
    assert run_cli("run", "--method", "protonett", "--bench", "synthetic-5w1s", "--runs-dir", runs_dir) == 2
    err = capsys.readouterr().err
    assert "unknown method 'protonett'" in err and "Did you mean 'protonet'" in err and "pixels" in err
    assert (
        run_cli(
            "run", "--method", "pixels", "--bench", "synthetic-5w1s", "--set", "bench.shots=0", "--runs-dir", runs_dir
        )
        == 2
    )
    assert "bench.shots must be >= 1" in capsys.readouterr().err
    assert not runs_dir.exists()


def test_list_answers_without_importing_torch():
    code = "import sys; from harness.cli import main; main(['list']); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO-TORCH")
    for name in ("protonet", "maml-fo", "omniglot-small1-20w1s-lake", "miniimagenet-5w5s", "logreg"):
        assert name in out


def test_overrides_convert_between_text_tree_and_flat_keys():
    from harness.overrides import Grid

    settings = Overrides.from_text(["train.lr=1e-3", "method.widths=[64,64]", "eval.head='a,b'", "data.holdout=yes"])
    assert dict(settings) == {"train.lr": "1e-3", "method.widths": [64, 64], "eval.head": "a,b", "data.holdout": True}
    assert Overrides.from_text(settings.text()) == settings  # command-line text reads back unchanged
    assert Overrides.from_tree(settings.tree()) == settings
    assert settings.merged({"train.lr": 0.5})["train.lr"] == 0.5 and settings["train.lr"] == "1e-3"
    assert Overrides.from_text(["head=prototype", "train.steps=3"], "--where", grouped=False).grouped() == {
        "train.steps": 3
    }
    grid = Grid.from_text(["train.lr=0.1,0.01", "method.widths=[64,64],[32,32]", "train.steps=5"])
    assert grid.size() == 4 and grid.varying() == ["train.lr", "method.widths"]
    assert [dict(p) for p in grid.points()][1] == {"train.lr": 0.1, "method.widths": [32, 32], "train.steps": 5}


def test_views_are_their_own_group_and_hash_as_before():
    simclr = resolve("simclr", "omniglot-small1-20w1s-lake").config
    assert simclr.views.min_scale == 0.6 and simclr.views.hf_prob == 0.0  # presets/views.yaml [omniglot-lake]
    byol = resolve("byol", "miniimagenet-5w1s").config
    assert byol.views.cj_bright == 0.4 and byol.views.gaussian_blur == 1.0  # byol.yaml [default] over views.yaml
    assert resolve("byol", "omniglot-5w1s").config.views.gaussian_blur == 0.0  # the family's views win at their level
    with pytest.raises(ConfigError, match="protonet has no views"):
        resolve("protonet", "synthetic-5w1s", sets=["views.min_scale=0.5"])
    # Hashed with the view settings inside method.*, as runs were before views were a group:
    import hashlib
    import json

    tree = simclr.to_dict()
    tree["method"].update(tree.pop("views"))
    tree["data"].pop("root")
    for group, key in ADDED_ABSENT:
        tree[group].pop(key, None)
    blob = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=list)
    assert config_hash(simclr) == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert config_hash(
        resolve("simclr", "omniglot-small1-20w1s-lake", sets=["train.clip_grad_norm=1"]).config
    ) != config_hash(simclr)


def test_a_stored_config_from_before_views_were_a_group_resolves_again():
    from harness.settings import stored_overrides

    config = resolve("simclr", "synthetic-5w1s", sets=["views.min_scale=0.7"]).config
    old = config.to_dict()
    old["method"].update(old.pop("views"))  # how config.yaml stored it then
    for group, key in ADDED_ABSENT:
        old[group].pop(key, None)  # how config.yaml stored it before these keys existed
    again = resolve("simclr", "synthetic-5w1s", overrides=stored_overrides(old)).config
    assert again.views.min_scale == 0.7 and config_hash(again) == config_hash(config)


def test_a_huge_text_setting_is_refused_before_a_run_exists(tmp_path, capsys):
    assert (
        run_cli(
            "run",
            "--method",
            "pixels",
            "--bench",
            "synthetic-5w1s",
            "--set",
            "data.holdout=" + "x" * 100_000,
            "--runs-dir",
            tmp_path / "runs",
        )
        == 2
    )
    assert "100,000 characters long" in one_error(capsys) and not (tmp_path / "runs").exists()
