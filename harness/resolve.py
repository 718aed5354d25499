"""Resolving a run's configuration from its method, benchmark, presets and the user's overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from typing import Any

from harness import loggers
from harness.benchmarks import get_benchmark
from harness.catalog import BACKBONES, HEADS
from harness.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    RunConfig,
    TrainConfig,
    ViewConfig,
    check_bounds,
    load_yaml,
    read_yaml,
    set_value,
)
from harness.overrides import Overrides
from harness.protocol import Benchmark
from harness.settings import check_not_renamed


@dataclass
class Resolved:
    """A resolved configuration with the registry objects it came from, and where each value came from
    (``origins``: ``group.key`` → default, the benchmark, a preset level, the method's fixed settings, a
    ``--config`` file, a sweep or ``--set``)."""

    config: RunConfig
    entry: Any  # MethodEntry
    benchmark: Benchmark
    method_class: type
    origins: dict[str, str] = field(default_factory=dict)


VIEWS_PRESET = "views"  # presets/views.yaml: the views.* settings per benchmark family, for every method with views
DEFAULT, TINY = "default", "tiny"  # a preset's sections besides families and benchmarks (never taken for one)


def preset_trees(presets: list[str]) -> list[tuple[str, dict]]:
    """(name, YAML tree) of each preset file (an empty tree where a method has none)."""
    return [(preset, read_preset(preset)) for preset in presets]


def preset_layers(presets: list[str], *keys: str) -> list[tuple[str, Overrides]]:
    """The presets' ``default`` settings, then their settings for each of ``keys`` (the benchmark's
    family, then the benchmark's own name), as (source, settings); at each level the later preset wins.
    A family or benchmark named like a section (``default``, ``tiny``) takes no settings from it."""
    trees = preset_trees(presets)
    return [
        (source, Overrides.from_tree(tree[key], source))
        for key in (DEFAULT, *(k for k in keys if k not in (DEFAULT, TINY)))
        for preset, tree in trees
        if tree.get(key)
        for source in [f"preset {preset}.yaml [{key}]"]
    ]


def tiny_settings(method: str) -> Overrides:
    """A method's tiny settings: its presets' ``tiny:`` blocks (the later preset wins), the smallest that
    still train every part of it in a few steps; the method-contract tests run every method with them."""
    from harness.methods import METHODS

    return Overrides().merged(
        *(
            Overrides.from_tree(tree[TINY], f"preset {preset}.yaml [{TINY}]")
            for preset, tree in preset_trees(METHODS.get(method).presets)
            if tree.get(TINY)
        )
    )


def preset_levels(presets: list[str]) -> list[tuple[str, Overrides]]:
    """Every level of the presets (``default`` first, then each family or benchmark they name), as
    (source, settings)."""
    return preset_layers(presets, *dict.fromkeys(key for _, tree in preset_trees(presets) for key in tree))


def read_preset(preset: str) -> dict:
    """A preset file's levels (``{}`` where the method has none)."""
    path = resources.files("harness.methods").joinpath("presets", f"{preset}.yaml")
    return (read_yaml(path.read_text(encoding="utf-8"), f"preset {preset}.yaml") or {}) if path.is_file() else {}


def presets_of(entry, cls) -> list[str]:
    """The preset files a method's settings come from: the shared views preset (methods with views), its own."""
    return [VIEWS_PRESET, *entry.presets] if cls.uses_views else entry.presets


def resolve(
    method: str,
    benchmark: str,
    config_file: str | None = None,
    sets: list[str] | tuple = (),
    overrides: Mapping[str, Any] | None = None,
) -> Resolved:
    """Defaults → benchmark → preset → fixed → ``config_file`` → ``overrides`` (dotted keys, e.g. a sweep's
    grid point or a tuning trial) → ``sets`` (``--set`` text); then validate. ``benchmark`` is a registered
    name or a benchmark file (``path.yaml``, ``path.yaml:NAME``); the config holds the benchmark's name."""
    from harness.methods import METHODS

    entry = METHODS.get(method)
    cls = entry.load()
    spec = get_benchmark(benchmark)
    cfg = RunConfig(
        method_name=method,
        benchmark=spec.name,
        bench=spec.bench_config(),
        data=DataConfig(class_rotations=spec.class_rotations),
        train=TrainConfig(),
        eval=EvalConfig(),
        method=cls.Config(),
        views=ViewConfig() if cls.uses_views else None,
    )
    origins = {f"{group}.{key}": "default" for group in cfg.groups() for key in vars(cfg.group(group))}
    from_benchmark = f"benchmark {spec.name}"
    origins.update(
        {f"bench.{key}": from_benchmark for key in vars(cfg.bench)}, **{"data.class_rotations": from_benchmark}
    )
    layers = preset_layers(presets_of(entry, cls), spec.family, spec.name)
    layers.append((f"method {method} (fixed)", Overrides.from_tree(entry.fixed)))
    user = []
    if config_file:
        user.append((str(config_file), Overrides.from_tree(load_yaml(config_file), str(config_file))))
    if overrides:
        user.append(("sweep", Overrides(overrides)))
    if sets:
        user.append(("--set", Overrides.from_text(sets)))
    fixed = layers[-1][1]
    preset_steps = None
    for index, (source, settings) in enumerate(layers + user):
        if index == len(layers):
            preset_steps = cfg.train.steps  # what train.steps is before any setting of the user's
        for key, value in settings.items():
            if index >= len(layers) and key in fixed and value != fixed[key]:
                raise ConfigError(
                    f"{source}: {key} is fixed at {fixed[key]!r} by {method} (that is what the ablation is); "
                    f"run the full method to change it"
                )
            check_not_renamed(key, type(cfg.method), source)
            try:
                set_value(cfg, key, value)
            except ConfigError as exc:
                exc.args = (f"{source}: {exc}",)
                raise
            origins[key] = source
    check_training_length(cfg, cls, origins, preset_steps if user else cfg.train.steps)
    if not cfg.data.image_size:
        cfg.data.image_size, origins["data.image_size"] = spec.image_size, from_benchmark
    if not cfg.eval.head:
        cfg.eval.head = cls.default_head or spec.head
        origins["eval.head"] = f"method {method}" if cls.default_head else from_benchmark
    HEADS.get(cfg.eval.head, "eval.head")
    loggers.check(cfg.log.loggers)
    check_bounds(cfg)
    bench = Benchmark.of(spec, cfg.data.root)
    bench.check(cfg.bench)
    if not cfg.eval.test and not (cfg.data.holdout or bench.spec.splits.get("val")):
        raise ConfigError(
            f"eval.test=false scores only the validation split, and {spec.name} has none: "
            "set data.holdout to a group of training classes"
        )
    if "backbone" in {f.name for f in fields(cls.Config)}:  # every method with a backbone, before its own checks
        check_backbone(cfg.method.backbone, bench.dataset.channels, cfg.data.image_size)
    cls.check_config(cfg, bench)
    check_head(cls, cfg.eval.head)
    return Resolved(cfg, entry, bench, cls, origins)


def check_training_length(cfg: RunConfig, cls: type, origins: dict, preset_steps: int) -> None:
    """A FLOP budget sets how many steps a run trains: with one, a train.steps of the user's own would be
    silently overridden, so the pair is refused; and a method that does not train cannot spend a budget."""
    if not cfg.train.budget_flops:
        return
    if not cls.trains:
        raise ConfigError(
            f"train.budget_flops={cfg.train.budget_flops:g} ({origins['train.budget_flops']}): {cfg.method_name} "
            "does not train, so there is nothing to spend it on; remove it"
        )
    if cfg.train.steps != preset_steps:
        raise ConfigError(
            f"train.steps={cfg.train.steps} ({origins['train.steps']}) and train.budget_flops="
            f"{cfg.train.budget_flops:g} ({origins['train.budget_flops']}) both set how long the run trains, and "
            "the budget would win (it trains the steps it buys); set only one of them"
        )


def check_head(cls: type, head: str) -> None:
    """The ``adapt`` head needs a method that adapts per episode; the others need an embedding."""
    from harness.method import Method

    adapt = head == "adapt"
    needs = "solve_episodes" if adapt else "embed"
    if getattr(cls, needs) is getattr(Method, needs):
        what, fix = ("adapts to each episode", "prototype or logreg") if adapt else ("embeds images", "adapt")
        raise ConfigError(
            f"eval.head={head} needs a method that {what}, and {cls.__name__} does not; use eval.head={fix}"
        )


@lru_cache(maxsize=None)
def check_backbone(backbone: str, channels: int, image_size: int) -> None:
    """``method.backbone`` is registered (closest-match error) and takes the run's images: shape-only
    inputs pass through it on torch's meta device, so an image size it cannot take is a config error
    before any work starts."""
    BACKBONES.get(backbone, "method.backbone")
    from harness.backbones import feature_dims

    try:
        feature_dims(backbone, channels, image_size, (image_size,))
    except RuntimeError as exc:
        raise ConfigError(
            f"data.image_size={image_size} is too small for the {backbone} backbone "
            f"({str(exc).splitlines()[0]}); use a larger data.image_size or another "
            f"method.backbone"
        ) from None


def check_data(resolved: Resolved, download: bool = False) -> None:
    """Raise the missing-dataset error (with the command that fixes it) before any work starts, or with
    ``download`` fetch the missing files (``harness run``'s fetch on first use)."""
    resolved.benchmark.ensure_available(download)


def config_listing(resolved: Resolved) -> str:
    """The resolved configuration as YAML, each value followed by where it came from (``# origin``)."""
    from harness.overrides import format_value
    from harness.settings import config_hash

    cfg = resolved.config
    lines = [
        f"# {cfg.method_name} on {cfg.benchmark} (config hash {config_hash(cfg)}); after each value, where it "
        "came from",
        f"method_name: {cfg.method_name}",
        f"benchmark: {cfg.benchmark}",
    ]
    for group in cfg.groups():
        lines.append(f"{group}:")
        values = [
            (f"  {key}: {format_value(value)}", resolved.origins.get(f"{group}.{key}", "default"))
            for key, value in vars(cfg.group(group)).items()
        ]
        width = max(len(text) for text, _ in values)
        lines += [f"{text.ljust(width)}  # {origin}" for text, origin in values]
    return "\n".join(lines)
