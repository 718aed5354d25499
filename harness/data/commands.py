"""``harness data status|verify|download|prepare``: the data root's datasets from the command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.errors import HarnessError


def cmd_data(args) -> int:
    """``harness data status|verify|download|prepare``."""
    from harness.data import DATASETS, get_dataset
    from harness.data.base import data_root

    root = data_root(args.root or "")
    if args.action in ("status", "verify"):
        datasets = [get_dataset(name) for name in ([args.name] if args.name else DATASETS.names())]
        print(
            f"data root: {root}"
            + (f"   mirror: {os.environ['HARNESS_DATA_MIRROR']}" if os.environ.get("HARNESS_DATA_MIRROR") else "")
        )
        return data_status(datasets, root) if args.action == "status" else data_verify(datasets, root, bool(args.name))
    dataset = get_dataset(args.name)
    if args.action == "download":
        fetched = dataset.download(root, force=args.force)
        print(f"{args.name}: " + (f"fetched {', '.join(p.name for p in fetched)}" if fetched else "all files present"))
        written = dataset.build_caches(root, force=args.force)
        print(
            f"{args.name}: "
            + (f"decoded {', '.join(p.name for p in written)}" if written else "decoded caches verified")
            + f" in {root / dataset.folder / 'cache' / dataset.name}"
        )
        return 0
    if args.source:
        dataset.prepare_from(root, Path(args.source))
        print(f"{args.name}: prepared from {args.source} into {root / dataset.folder}")
        return 0
    if not args.force:
        raise HarnessError(
            "harness data prepare NAME needs --from PATH (your local copy) "
            "or --force (rebuild the decoded caches from the raw files)"
        )
    written = dataset.build_caches(root, force=True)
    print(f"{args.name}: rebuilt {', '.join(p.name for p in written) or 'no caches'} from {dataset.raw_dir(root)}")
    return 0


def data_status(datasets: list, root: Path) -> int:
    from harness.terminal import fitted

    rows = []
    for dataset in datasets:
        status = dataset.status(root)
        mark = {"ok": "✓", "unpinned": "✓", "missing": "✗", "bad": "✗ corrupt"}
        files = ", ".join(f"{n} {mark[s]}" for n, s in status["files"].items()) or "(generated)"
        caches = ", ".join(n + (" (corrupt)" if s == "bad" else "") for n, s in status["cached"].items())
        state = "damaged" if status["damaged"] else "ready" if status["ready"] else "missing"
        content = ", ".join(f"{split} {facts['content_sha256'][:12]}" for split, facts in status["content"].items())
        rows.append([dataset.name, state, files, caches, content])
    print(
        fitted(
            rows,
            ["dataset", "state", "raw files", "decoded caches", "content (SHA256 of the decoded images)"],
            wrap=["raw files", "decoded caches", "content (SHA256 of the decoded images)"],
        )
    )
    if any(row[1] == "damaged" for row in rows):
        print("some files fail their checks: `harness data verify` names them and the command that repairs each")
    return 0


def data_verify(datasets: list, root: Path, named: bool) -> int:
    from harness.terminal import fitted

    if named:
        datasets[0].ensure_available(root)
    checks = [(dataset.name, check) for dataset in datasets for check in dataset.check(root)]
    present = [(name, c) for name, c in checks if c.state != "missing"]
    print(
        fitted(
            [[name, c.kind, c.path.name, c.state, c.detail] for name, c in present],
            ["dataset", "kind", "file", "state", "detail"],
            wrap=["detail", "file"],
        )
        if present
        else "no dataset files under the data root"
    )
    bad = [c for _, c in present if c.state == "bad"]
    for c in bad:
        print(f"harness: {c.path}: {c.detail}; repair: {c.repair}", file=sys.stderr)
    return 1 if bad else 0


def add_commands(sub) -> None:
    """``harness data ACTION``: one sub-command per action, each with its own arguments and help."""
    p = sub.add_parser(
        "data",
        help="datasets: status, verify, download, prepare from your own copy",
        description="Datasets under the data root: what is present, checksums, fetching the published "
        "files, and preparing your own copy. `harness data ACTION --help` explains each.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    names = "dataset name (see `harness list datasets`)"

    a = actions.add_parser(
        "status",
        help="what is present, per dataset (checked by content)",
        description="Each dataset's raw files and decoded caches under the data root: present, "
        "missing, or damaged (failing a checksum, or changed since it was prepared).",
    )
    a.add_argument("name", nargs="?", help=f"only this dataset: a {names} (default: every dataset)")

    a = actions.add_parser(
        "verify",
        help="check every file's checksum; exit 1 naming each bad file and its repair",
        description="Hash each raw file (against its published SHA256 where one is pinned, and "
        "against the file it was prepared from) and each decoded cache (against its "
        "stored SHA256). Exit 1, naming each bad file and the command that repairs it.",
    )
    a.add_argument("name", nargs="?", help=f"only this dataset: a {names} (default: every dataset)")

    a = actions.add_parser(
        "download",
        help="fetch a dataset's published files (checksum-verified) and decode them",
        description="Fetch the raw files that are missing or fail their checksum, from "
        "$HARNESS_DATA_MIRROR/<folder>/ or their public URLs, verify them, and decode "
        "every split into its cache.",
    )
    a.add_argument("name", help=names)
    a.add_argument("--force", action="store_true", help="fetch every raw file again and rebuild every decoded cache")

    a = actions.add_parser(
        "prepare",
        help="take your own copy of a dataset (--from), or rebuild its caches (--force)",
        description="--from DIR: take your local copy of the dataset: the published files, "
        "found anywhere under DIR, are verified and linked into the data root (a hard "
        "link on the same filesystem, else a symbolic link; never copied), with their "
        "SHA256 recorded so that `harness data status` and `verify` notice a source "
        "that changes or goes away; other layouts (see the README's table) are decoded "
        "straight into the caches. --force: rebuild every decoded cache from the raw "
        "files.",
    )
    a.add_argument("name", help=names)
    a.add_argument("--from", dest="source", metavar="DIR", help="the folder holding your local copy")
    a.add_argument(
        "--force", action="store_true", help="without --from: rebuild every decoded cache from the raw files"
    )

    for a in actions.choices.values():
        a.add_argument("--root", help="data root (default $HARNESS_DATA or ~/.cache/fewshot-harness)")
        a.set_defaults(handler=cmd_data)
