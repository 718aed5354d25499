"""`harness data prepare NAME --from DIR` links the user's files instead of copying them: a hard
link on the same filesystem, else a symlink, with the SHA256 recorded, so that a changed or vanished source
is one error naming the file and the fix."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_data import class_image, png, write_mini_pickles

from harness.data import get_dataset
from harness.data.linked import RECORD
from harness.errors import DataError

from conftest import run_cli


def write_tiered_pickles(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, classes in (("train", [0, 1]), ("val", [2]), ("test", [3, 4])):
        labels = np.repeat(classes, 2)
        with open(folder / f"{split}_images_png.pkl", "wb") as fh:
            pickle.dump(
                [np.frombuffer(png(class_image(c, i % 2, 84)), dtype=np.uint8) for i, c in enumerate(labels)], fh
            )
        with open(folder / f"{split}_labels.pkl", "wb") as fh:
            pickle.dump({"label_specific": labels, "label_general": labels // 2}, fh)


WRITERS = {"miniimagenet": write_mini_pickles, "tieredimagenet": write_tiered_pickles}


@pytest.fixture(params=["hard link", "symlink"])
def link(request, monkeypatch) -> str:
    """How the data root takes the user's files: a hard link, or (as across filesystems) a symlink."""
    if request.param == "symlink":

        def cross_device(source, target):
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", cross_device)
    return request.param


def prepare(tmp_path: Path, name: str = "miniimagenet") -> tuple[Path, Path]:
    """The user's copy (in a subfolder of --from) prepared into a fresh data root: (copy folder, root)."""
    copy, root = tmp_path / "copy", tmp_path / "root"
    WRITERS[name](copy / "pickles")
    assert run_cli("data", "prepare", name, "--from", copy, "--root", root) == 0
    return copy / "pickles", root


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", ["miniimagenet", "tieredimagenet"])
def test_prepare_from_keeps_no_second_copy_of_the_files(tmp_path, link, name, capsys):
    copy, root = prepare(tmp_path, name)
    dataset = get_dataset(name)
    raw = dataset.raw_dir(root)
    for remote in dataset.files:
        source = copy / remote.name
        if link == "hard link":
            assert not (raw / remote.name).is_symlink()
            assert (raw / remote.name).stat().st_ino == source.stat().st_ino  # one file, two names
        else:
            assert os.readlink(raw / remote.name) == str(source.resolve())
    inodes = {(copy / f.name).stat().st_ino for f in dataset.files}
    own = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_ino not in inodes]
    assert sum(p.stat().st_size for p in own if p.suffix == ".pkl") == 0  # the root holds no pickle bytes of its own
    assert len(dataset.load(root, "test").class_names) == 2
    capsys.readouterr()
    assert run_cli("data", "verify", name, "--root", root) == 0
    assert run_cli("data", "status", name, "--root", root) == 0 and f"{name}  ready" in capsys.readouterr().out


def test_a_changed_source_is_one_error_naming_the_file_and_the_fix(tmp_path, link, capsys):
    copy, root = prepare(tmp_path)
    dataset = get_dataset("miniimagenet")
    source = copy / "mini-imagenet-cache-train.pkl"
    before = source.stat()
    data = bytearray(source.read_bytes())
    data[-200] ^= 0xFF  # the same size, other pixels
    source.write_bytes(bytes(data))
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with its old time, verify hashes it
    capsys.readouterr()
    assert run_cli("data", "verify", "--root", root) == 1
    error = one_error_line(capsys.readouterr().err)
    assert error.startswith(f"harness: {dataset.raw_dir(root) / source.name}: its source {source.resolve()} changed")
    assert f"`harness data prepare miniimagenet --from {tmp_path / 'copy'}`" in error
    os.utime(source)  # a later time: status compares size and time, and hashes where they differ
    assert run_cli("data", "status", "--root", root) == 0 and "miniimagenet      damaged" in capsys.readouterr().out
    with pytest.raises(DataError, match=f"its source {source.resolve()} changed since it was prepared"):
        dataset.load(root, "train", 32)  # a size not decoded yet is not decoded from the changed file
    prepare(tmp_path)  # prepared again: what is there now is what is recorded
    assert run_cli("data", "verify", "miniimagenet", "--root", root) == 0


def test_a_vanished_source(tmp_path, link, capsys):
    """Behind a symlink, a deleted source is an error naming it (the decoded caches still load); a hard link
    keeps the bytes, so nothing is lost."""
    copy, root = prepare(tmp_path)
    dataset = get_dataset("miniimagenet")
    (copy / "mini-imagenet-cache-test.pkl").unlink()
    capsys.readouterr()
    if link == "hard link":
        assert run_cli("data", "verify", "miniimagenet", "--root", root) == 0
        return
    assert run_cli("data", "verify", "miniimagenet", "--root", root) == 1
    error = one_error_line(capsys.readouterr().err)
    assert f"its source {(copy / 'mini-imagenet-cache-test.pkl').resolve()} is gone" in error
    assert "harness data prepare miniimagenet --from" in error
    assert dataset.load(root, "test").images.shape == (8, 3, 84, 84)


def test_a_download_replaces_the_links_and_their_record(tmp_path, link, monkeypatch, capsys):
    copy, root = prepare(tmp_path)
    write_mini_pickles(tmp_path / "mirror" / "miniimagenet")
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    assert run_cli("data", "download", "miniimagenet", "--force", "--root", root) == 0
    raw = get_dataset("miniimagenet").raw_dir(root)
    for path in copy.iterdir():
        assert not (raw / path.name).is_symlink() and (raw / path.name).stat().st_ino != path.stat().st_ino
        path.unlink()  # the user's copy no longer matters
    assert '"files": {}' in (raw / RECORD).read_text()
    assert run_cli("data", "verify", "miniimagenet", "--root", root) == 0
