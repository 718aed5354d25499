"""What a run's settings are, in one place: the canonical form of a configuration tree, the declared
migrations of stored trees, flattening, and the config hash.

Canonical form
    ``{"method_name", "benchmark", group: {key: value}}`` with every key the run's dataclasses declare
    and view settings under ``views`` (methods that use views). A stored ``config.yaml`` names the
    ``schema`` it was written in (none: 0); it reaches the canonical form by the declared ``MIGRATIONS``
    newer than its schema (oldest first) and by filling in each *added* key (a field whose metadata is
    ``added(...)``: it came after runs were recorded) at its default, which is what a run stored without
    it ran with. Reports, ``--where`` filters, ``reproduce`` and resume all read this form.
Renamed keys
    ``RENAMES`` is the one declared map of keys that changed name; a stored tree migrates through it, and
    a user's override or filter that names an old key is one error naming the new one.
The hash
    Of the form runs were first hashed in, so that committed runs keep their identity: view settings
    under ``method``, renamed keys under their old names, without ``UNHASHED`` keys, and without added
    keys at their defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from harness.config import ADDED, GROUPS, BenchConfig, DataConfig, EvalConfig, RunConfig, TrainConfig, ViewConfig
from harness.errors import ConfigError
from harness.overrides import Overrides

# Keys that say where things are, not what is computed: not hashed, not carried to a re-run.
UNHASHED = {("data", "root")}
SHARED_GROUPS = {"bench": BenchConfig, "data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
VIEW_KEYS = frozenset(f.name for f in dataclasses.fields(ViewConfig))


def method_class(name: str) -> type:
    """The registered method class (imports the method's module)."""
    from harness.methods import METHODS

    return METHODS.get(name).load()


def group_classes(cls: type | None) -> dict[str, type]:
    """Group name → the dataclass a run of method class ``cls`` has for it (None: a method this
    installation does not register, whose runs a report may still read: the shared groups)."""
    if cls is None:
        return dict(SHARED_GROUPS)
    groups = {**SHARED_GROUPS, "method": cls.Config}
    return {**groups, "views": ViewConfig} if cls.uses_views else groups


def added_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get(ADDED)}


def move_view_settings(tree: dict, cls: type | None) -> None:
    """Runs recorded before ``views.*`` was a group kept view settings under ``method.*``."""
    if cls is None or not cls.uses_views:
        return
    method = tree.get("method") or {}
    moved = {key: method.pop(key) for key in [k for k in method if k in VIEW_KEYS]}
    if moved:
        tree["views"] = {**moved, **(tree.get("views") or {})}


@dataclass(frozen=True)
class Rename:
    """``old`` is ``new`` (since the schema ``MIGRATIONS`` names it at), for the methods whose ``method.*``
    dataclass is ``owner`` (``module:Class``) or extends it. A tree stored before then without ``old`` ran with ``old`` at ``before``
    (an added key's default). The hash keeps the old form: ``old`` (left out at ``before``), and ``new`` at
    ``hashed_new``, the value it held there."""

    owner: str
    old: str
    new: str
    before: Any
    hashed_new: Any

    def applies(self, method_config: type | None) -> bool:
        module, _, name = self.owner.partition(":")
        return method_config is not None and issubclass(method_config, getattr(import_module(module), name))

    def __call__(self, tree: dict, cls: type | None) -> None:
        """The migration: a stored tree's ``old`` value to ``new``."""
        if not self.applies(cls and cls.Config):
            return
        (old_group, old_key), (new_group, new_key) = self.old.split("."), self.new.split(".")
        tree.setdefault(new_group, {})[new_key] = (tree.get(old_group) or {}).pop(old_key, self.before)

    def hashed(self, tree: dict) -> None:
        """A resolved tree's ``new`` value back under ``old``, as the hash first saw it."""
        (old_group, old_key), (new_group, new_key) = self.old.split("."), self.new.split(".")
        value, tree[new_group][new_key] = tree[new_group][new_key], self.hashed_new
        if value != self.before:
            tree[old_group][old_key] = value


# Tasks per step have one key for every episodic method: ProtoNet's episodes per step were method.meta_batch
# (train.batch_size, which ProtoNet did not read, stayed at TrainConfig's default of 64 in its stored runs).
TASKS_PER_STEP = Rename(
    "harness.methods.protonet:ProtoNetConfig", "method.meta_batch", "train.batch_size", before=1, hashed_new=64
)
RENAMES = (TASKS_PER_STEP,)


SCHEMA = 2  # the schema of the trees this version writes (``stored_form``)
# (schema a migration brings a tree to, the migration): each applies to the trees stored in an older schema
MIGRATIONS = ((1, move_view_settings), (2, TASKS_PER_STEP))


def stored_form(cfg: RunConfig) -> dict:
    """A resolved configuration as a run's ``config.yaml`` stores it: its tree and the schema it is in."""
    return {"schema": SCHEMA, **cfg.to_dict()}


def check_not_renamed(key: str, method_config: type | None, source: str) -> None:
    """A ConfigError if ``key`` is a renamed key of the method whose ``method.*`` dataclass is ``method_config``
    (None: of any method)."""
    for rename in RENAMES:
        if key == rename.old and (method_config is None or rename.applies(method_config)):
            raise ConfigError(
                f"{source}: {rename.old} is now {rename.new} (one key for tasks per step in every "
                f"episodic method); use {rename.new}"
            )


def canonical(tree: dict) -> dict:
    """A stored or resolved configuration tree in canonical form (see the module doc)."""
    tree = json.loads(json.dumps(tree, default=list))  # a copy, with tuples as the lists YAML stores
    from harness.methods import METHODS

    name = tree["method_name"]
    cls = method_class(name) if name in METHODS else None
    schema = tree.pop("schema", 0)
    for version, migration in MIGRATIONS:
        if schema < version:
            migration(tree, cls)
    for group, group_cls in group_classes(cls).items():
        if isinstance(tree.get(group), dict):
            for key, default in added_defaults(group_cls).items():
                tree[group].setdefault(key, default)
    return tree


def flatten(tree: dict) -> dict[str, Any]:
    """``group.key`` → value for the groups, beside the tree's top-level values (``method_name``, ...)."""
    groups = {key: value for key, value in tree.items() if isinstance(value, dict)}
    return {**{k: v for k, v in tree.items() if k not in groups}, **Overrides.from_tree(groups)}


def stored_overrides(tree: dict) -> Overrides:
    """A stored run's configuration as overrides that resolve it again (without where its data lived)."""
    tree = canonical(tree)
    settings = Overrides.from_tree({group: tree[group] for group in GROUPS if group in tree})
    return Overrides({key: value for key, value in settings.items() if tuple(key.split(".", 1)) not in UNHASHED})


def config_keys(methods: list[str]) -> set[str]:
    """Every ``group.key`` a run of one of ``methods`` has in canonical form (imports the methods)."""
    return {"benchmark", *config_types(methods)}


def config_types(methods: list[str]) -> dict[str, list]:
    """Every ``group.key`` of ``methods``' runs → the annotations it has (one per dataclass declaring it)."""
    import typing

    types: dict[str, list] = {}
    for method in sorted(set(methods)):
        for group, cls in group_classes(method_class(method)).items():
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                known = types.setdefault(f"{group}.{f.name}", [])
                if hints[f.name] not in known:
                    known.append(hints[f.name])
    return types


def config_hash(cfg: RunConfig) -> str:
    """A stable digest of everything that affects the computed result (see the module doc)."""
    return tree_hash(cfg.to_dict(), type(cfg.method), {group: type(cfg.group(group)) for group in cfg.groups()})


def stored_hash(stored: dict) -> str:
    """The config hash of a run's stored ``config.yaml`` tree (what its record's ``config_hash`` must be), read
    through the declared migrations; a tree of a method this installation does not register is an error."""
    tree = canonical(stored)
    tree.pop("source_run", None)  # an eval record's pointer to its source, not a setting
    cls = method_class(tree["method_name"])
    groups = {group: group_cls for group, group_cls in group_classes(cls).items() if group in tree}
    return tree_hash(tree, cls.Config, groups)


def tree_hash(tree: dict, method_config: type, groups: dict[str, type]) -> str:
    """The hash of a canonical tree (its groups' dataclasses ``groups``; see the module doc)."""
    tree = json.loads(json.dumps(tree, default=list))
    for rename in RENAMES:
        if rename.applies(method_config):
            rename.hashed(tree)
    for group, group_cls in groups.items():
        for key, default in added_defaults(group_cls).items():
            if tree[group].get(key) == default:
                del tree[group][key]
    tree["method"].update(tree.pop("views", {}))
    for group, key in UNHASHED:
        tree[group].pop(key, None)
    blob = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def derived_hash(source_hash: str, cfg: RunConfig) -> str:
    """The configuration of a ``harness eval`` record: its source run's and the evaluation's together."""
    return hashlib.sha256(f"{source_hash}|{config_hash(cfg)}".encode()).hexdigest()[:12]
