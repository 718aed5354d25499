"""Data integrity (harness/data/integrity.py, harness/data/safe_pickle.py): dataset pickles are decoded without running
code, decoded caches carry a SHA256 checked on every load (a damaged cache is rebuilt and gives the same tensors),
`harness data verify` / `status` / `--force`, and a damaged raw zip is one error naming the file and its repair."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import get_dataset
from harness.errors import DataError

from conftest import run_cli


class Payload:
    """What a doctored dataset file carries: unpickling it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def one_error_line(err: str) -> str:
    """The CLI's error output, asserted to be a single line without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ dataset pickles run no code


def test_miniimagenet_pickle_payload_is_refused(tmp_path, capsys):
    marker, source = tmp_path / "marker", tmp_path / "mini"
    source.mkdir()
    for mode in ("train", "validation", "test"):
        cache = {
            "image_data": np.zeros((4, 84, 84, 3), np.uint8),
            "class_dict": {"n01": [0, 1], "n02": Payload(marker)},
        }
        (source / f"mini-imagenet-cache-{mode}.pkl").write_bytes(pickle.dumps(cache))
    assert run_cli("data", "prepare", "miniimagenet", "--from", source, "--root", tmp_path / "root") == 2
    error = one_error_line(capsys.readouterr().err)
    assert not marker.exists()
    assert "mini-imagenet-cache-train.pkl: refused to unpickle the global 'builtins.exec'" in error
    assert "nothing was run" in error and "harness data download miniimagenet --force" in error


def test_tieredimagenet_pickle_payload_is_refused(tmp_path, capsys):
    marker, source = tmp_path / "marker", tmp_path / "tiered"
    source.mkdir()
    for split in ("train", "val", "test"):
        (source / f"{split}_images_png.pkl").write_bytes(pickle.dumps([np.zeros(8, np.uint8)] * 2))
        labels = {
            "label_specific": np.array([0, 1]),
            "label_general": np.array([0, 0]),
            "label_specific_str": Payload(marker),
        }
        (source / f"{split}_labels.pkl").write_bytes(pickle.dumps(labels, protocol=2))
    assert run_cli("data", "prepare", "tieredimagenet", "--from", source, "--root", tmp_path / "root") == 2
    error = one_error_line(capsys.readouterr().err)
    assert not marker.exists()
    assert "train_labels.pkl: refused to unpickle the global '__builtin__.exec'" in error  # a protocol-2 name


def fc100_pickle(classes=(3, 1), extra=None) -> bytes:
    labels = np.repeat(classes, 2)
    split = {"data": np.zeros((len(labels), 32, 32, 3), np.uint8), "labels": labels.tolist()}
    return pickle.dumps({**split, **({"extra": extra} if extra is not None else {})})


def write_fc100_zip(path: Path, payload=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for split in ("train", "val", "test"):
            archive.writestr(f"FC100_{split}.pickle", fc100_pickle(extra=payload))


def test_fc100_pickle_payload_is_refused_in_the_zip_and_loose(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"
    write_fc100_zip(tmp_path / "mirror" / "fc100" / "fc100.zip", Payload(marker))
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    assert run_cli("data", "download", "fc100", "--root", tmp_path / "root") == 2
    error = one_error_line(capsys.readouterr().err)
    assert "fc100.zip:FC100_train.pickle: refused to unpickle the global 'builtins.exec'" in error
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "FC100_train.pickle").write_bytes(fc100_pickle(extra=Payload(marker)))
    assert run_cli("data", "prepare", "fc100", "--from", loose, "--root", tmp_path / "root2") == 2
    assert "FC100_train.pickle: refused to unpickle" in one_error_line(capsys.readouterr().err)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_genuine_numpy_pickles_of_every_protocol_load(protocol):
    original = {
        "data": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "labels": [3, 1],
        "names": np.array(["a", "bc"]),
        "count": np.int64(7),
        "scale": np.float32(0.5),
        "raw": b"\x89PNG",
        "tags": {"x"},
    }
    from harness.data.safe_pickle import load_pickle

    blob = pickle.dumps(original, protocol=protocol)
    numpy1 = [blob.replace(b"numpy._core.", b"numpy.core.")] if protocol < 4 else []  # names as numpy 1 wrote them
    for data in [blob, *numpy1]:
        loaded = load_pickle(data, "FC100_train.pickle", encoding="latin1")
        assert np.array_equal(loaded["data"], original["data"]) and loaded["names"].tolist() == ["a", "bc"]
        assert loaded["count"] == 7 and loaded["raw"] == b"\x89PNG" and loaded["tags"] == {"x"}


# ------------------------------------------------------------------ decoded caches: checksum, rebuild, verify


@pytest.fixture(scope="module")
def pristine(omniglot_small1, tmp_path_factory) -> Path:
    """A data root with Lake's small set 1 (raw files from the mirror) decoded at native size."""
    root = tmp_path_factory.mktemp("pristine")
    shutil.copytree(omniglot_small1 / "omniglot" / "raw", root / "omniglot" / "raw")
    dataset = get_dataset("omniglot-small1")
    for split in dataset.splits:
        dataset.load(root, split)
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy of the pristine root, free to damage."""
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def test_cache_checksum_is_stored_in_sha256sum_format(root):
    dataset = get_dataset("omniglot-small1")
    cache = dataset.cache_path(root, "test", 105)
    digest, name = cache.with_name(cache.name + ".sha256").read_text().split()
    assert name == cache.name and digest == hashlib.sha256(cache.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["truncated", "byte-flipped"])
def test_damaged_cache_is_detected_and_rebuilt(root, damage, capsys):
    dataset = get_dataset("omniglot-small1")
    good = dataset.load(root, "test")
    images, labels = good.images.clone(), good.labels.clone()
    del good  # it maps the file about to be damaged
    cache = dataset.cache_path(root, "test", 105)
    data = bytearray(cache.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 64])
    cache.write_bytes(bytes(data))
    again = dataset.load(root, "test")
    assert torch.equal(again.images, images) and torch.equal(again.labels, labels)
    message = one_error_line(capsys.readouterr().err)
    assert f"decoded cache {cache} does not match its stored SHA256" in message and "rebuilding it" in message
    assert torch.equal(dataset.load(root, "test").images, images)  # the rebuilt cache is used, silently
    assert capsys.readouterr().err == ""


def test_data_verify_and_status_name_damage_and_the_repair(root, capsys):
    assert run_cli("data", "verify", "omniglot-small1", "--root", root) == 0
    out = capsys.readouterr().out
    assert "test-105px.pt" in out and "images_background_small1.zip" in out and "bad" not in out
    dataset = get_dataset("omniglot-small1")
    cache = dataset.cache_path(root, "test", 105)
    cache.write_bytes(cache.read_bytes()[:4096])
    assert run_cli("data", "verify", "--root", root) == 1
    error = one_error_line(capsys.readouterr().err)
    assert str(cache) in error and "`harness data prepare omniglot-small1 --force`" in error
    assert run_cli("data", "status", "--root", root) == 0
    out = capsys.readouterr().out
    assert "omniglot-small1   damaged" in out and "test-105px.pt (corrupt)" in out and "harness data verify" in out
    dataset.load(root, "test")  # any load repairs it
    assert run_cli("data", "verify", "omniglot-small1", "--root", root) == 0
    assert run_cli("data", "status", "--root", root) == 0 and "omniglot-small1   ready" in capsys.readouterr().out


def test_prepare_force_rebuilds_every_cache(tmp_path, monkeypatch, capsys):
    write_fc100_zip(tmp_path / "mirror" / "fc100" / "fc100.zip")
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    root, dataset = tmp_path / "root", get_dataset("fc100")
    assert run_cli("data", "download", "fc100", "--root", root) == 0
    before = {size: dataset.load(root, "test", size).images.clone() for size in (32, 16)}
    for size in (32, 16):
        cache = dataset.cache_path(root, "test", size)
        data = bytearray(cache.read_bytes())
        data[-2000] ^= 0xFF
        cache.write_bytes(bytes(data))
    assert run_cli("data", "verify", "fc100", "--root", root) == 1
    assert run_cli("data", "prepare", "fc100", "--force", "--root", root) == 0
    assert "test-16px.pt" in capsys.readouterr().out
    assert run_cli("data", "verify", "fc100", "--root", root) == 0
    assert all(torch.equal(dataset.load(root, "test", size).images, before[size]) for size in (32, 16))
    assert run_cli("data", "prepare", "fc100", "--root", root) == 2
    assert "needs --from PATH (your local copy) or --force" in one_error_line(capsys.readouterr().err)
    (dataset.raw_dir(root) / "fc100.zip").unlink()
    assert run_cli("data", "prepare", "fc100", "--force", "--root", root) == 2
    assert "`harness data download fc100`" in one_error_line(capsys.readouterr().err)


def test_download_over_a_truncated_cache_repairs_it(root, capsys):
    cache = get_dataset("omniglot-small1").cache_path(root, "test", 105)
    cache.write_bytes(cache.read_bytes()[:1000])
    assert run_cli("data", "download", "omniglot-small1", "--root", root) == 0
    captured = capsys.readouterr()
    assert "decoded test-105px.pt" in captured.out and str(cache) in one_error_line(captured.err)
    assert run_cli("data", "verify", "omniglot-small1", "--root", root) == 0


# ------------------------------------------------------------------ damaged raw zips


def test_damaged_pinned_zip_names_the_file_and_download_replaces_it(root, capsys):
    dataset = get_dataset("omniglot-small1")
    raw = dataset.raw_dir(root) / "all_runs.zip"
    raw.write_bytes(raw.read_bytes()[:5000])
    dataset.cache_path(root, "test", 105).unlink()
    with pytest.raises(DataError) as err:
        dataset.load(root, "test")
    assert f"{raw}: sha256 mismatch" in str(err.value) and "`harness data download omniglot-small1`" in str(err.value)
    assert run_cli("data", "verify", "omniglot-small1", "--root", root) == 1
    assert str(raw) in one_error_line(capsys.readouterr().err)
    assert run_cli("data", "download", "omniglot-small1", "--root", root) == 0  # fetched again from the mirror
    assert "fetched all_runs.zip" in capsys.readouterr().out
    assert len(dataset.load(root, "test").images) == 800


@pytest.mark.parametrize("damage", ["truncated", "byte-flipped"])
def test_damaged_unpinned_zip_is_one_error_naming_it(tmp_path, monkeypatch, capsys, damage):
    mirror_zip = tmp_path / "mirror" / "fc100" / "fc100.zip"
    write_fc100_zip(mirror_zip)
    data = bytearray(mirror_zip.read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 100]
    else:
        with zipfile.ZipFile(mirror_zip) as archive:
            info = archive.getinfo("FC100_train.pickle")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        data[start + info.compress_size // 2] ^= 0xFF
    mirror_zip.write_bytes(bytes(data))
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    assert run_cli("data", "download", "fc100", "--root", tmp_path / "root") == 2
    error = one_error_line(capsys.readouterr().err)
    assert f"{tmp_path / 'root' / 'fc100' / 'raw' / 'fc100.zip'}: not a readable zip archive" in error
    assert "`harness data download fc100 --force`" in error
    write_fc100_zip(mirror_zip)  # the mirror is repaired; --force fetches the file again
    assert run_cli("data", "download", "fc100", "--force", "--root", tmp_path / "root") == 0
    assert get_dataset("fc100").load(tmp_path / "root", "train").class_names == ["cifar100-1", "cifar100-3"]
