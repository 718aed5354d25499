"""Datasets: real Omniglot through the mirror, downloads and checksums, every loader on files the
tests write in the formats researchers have, the cache, and the training-split transforms."""

from __future__ import annotations

import functools
import http.server
import io
import pickle
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import get_dataset
from harness.data.remote import RemoteFile, fetch
from harness.errors import DataError, UnknownNameError
from harness.protocol import rotate_classes, split_off_group, subsample

from conftest import run_cli


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def class_image(cls: int, i: int, size: int, channels: int = 3) -> np.ndarray:
    """An image whose pixel value encodes its class (10·cls) and index (+i)."""
    shape = (size, size, channels) if channels > 1 else (size, size)
    return np.full(shape, 10 * cls + i, dtype=np.uint8)


# ------------------------------------------------------------------ real Omniglot (Lake's files)


def test_omniglot_small1_through_the_mirror(omniglot_small1):
    dataset = get_dataset("omniglot-small1")
    train = dataset.load(omniglot_small1, "train", 28)
    assert train.images.shape == (2720, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.num_classes == 136 and train.group_names == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert torch.bincount(train.labels).tolist() == [20] * 136
    assert train.images.float().mean() < 40  # ink (255) on a zero background
    test = dataset.load(omniglot_small1, "test", 105)
    episodes = dataset.fixed_episodes("test", test)
    assert len(episodes) == 20 and episodes.support.shape == (20, 20) and episodes.query.shape == (20, 20)
    assert sorted(episodes.query_labels[0].tolist()) == list(range(20))


def test_prepared_data_loads_from_the_cache(omniglot_small1, monkeypatch):
    dataset = get_dataset("omniglot-small1")
    first = dataset.load(omniglot_small1, "train", 28)
    monkeypatch.setattr(type(dataset), "read_split", lambda *a: pytest.fail("decoded again instead of using the cache"))
    again = dataset.load(omniglot_small1, "train", 28)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)


def test_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "omniglot"
    mirror.mkdir(parents=True)
    (mirror / "images_background_small1.zip").write_bytes(b"PK\x03\x04 a truncated zip")
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="sha256 mismatch"):
        get_dataset("omniglot-small1").download(root)
    assert list((root / "omniglot" / "raw").iterdir()) == []


def test_download_over_http_verifies_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_MIRROR", raising=False)
    served = tmp_path / "served"
    served.mkdir()
    payload = b"few-shot" * 1000
    (served / "good.bin").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    try:
        dest = tmp_path / "dest"
        path = fetch(RemoteFile("good.bin", f"{base}/good.bin", sha256=digest), dest, "x", progress=False)
        assert path.read_bytes() == payload
        (served / "bad.bin").write_bytes(payload[:-1])  # truncated copy of the same file
        with pytest.raises(DataError, match="sha256 mismatch"):
            fetch(RemoteFile("bad.bin", f"{base}/bad.bin", sha256=digest), dest, "x", progress=False)
        with pytest.raises(DataError, match="downloading .* failed"):
            fetch(RemoteFile("absent.bin", f"{base}/absent.bin"), dest, "x", progress=False)
        assert sorted(p.name for p in dest.iterdir()) == ["good.bin"]
    finally:
        server.shutdown()


def test_missing_dataset_names_files_and_commands(tmp_path, monkeypatch, capsys, runs_dir):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        get_dataset("miniimagenet").load(tmp_path / "empty", "test")
    message = str(err.value)
    assert "mini-imagenet-cache-test.pkl" in message and "harness data download miniimagenet" in message
    assert "harness data prepare miniimagenet --from PATH" in message
    assert (
        run_cli("run", "--method", "pixels", "--bench", "miniimagenet-5w1s", "--no-download", "--runs-dir", runs_dir)
        == 2
    )
    assert "harness data download miniimagenet" in capsys.readouterr().err and not runs_dir.exists()


def test_lake_alphabet_zip_layout(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as archive:
        for alphabet in ("Alpha", "Beta"):
            for character in ("character01", "character02", "character03"):
                for drawer in range(4):
                    image = np.full((105, 105), 255, dtype=np.uint8)
                    image[10 : 20 + drawer, 10:30] = 0  # black ink
                    archive.writestr(
                        f"images_background/{alphabet}/{character}/{drawer:02d}.png",
                        png(image.astype(bool).astype(np.uint8) * 255),
                    )
    split = get_dataset("omniglot").read_split(tmp_path, "train")
    assert split.class_names[:2] == ["Alpha/character01", "Alpha/character02"] and len(split.class_names) == 6
    assert split.group_names == ["Alpha", "Beta"] and split.class_groups.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.bincount(split.labels).tolist() == [4] * 6
    assert split.images[0].max() == 255 and split.images[0][0, 0] == 0  # stored as ink intensity


# ------------------------------------------------------------------ loaders on generated files


def write_mini_pickles(folder: Path, classes=(3, 2, 2)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for mode, n in zip(("train", "validation", "test"), classes):
        images, class_dict = [], {}
        for c in range(n):
            class_dict[f"n0{offset + c:02d}"] = list(range(len(images), len(images) + 4))
            images += [class_image(offset + c, i, 84) for i in range(4)]
        offset += n
        with open(folder / f"mini-imagenet-cache-{mode}.pkl", "wb") as fh:
            pickle.dump({"image_data": np.stack(images), "class_dict": class_dict}, fh)


def test_miniimagenet_pickles_through_the_mirror(tmp_path, monkeypatch):
    write_mini_pickles(tmp_path / "mirror" / "miniimagenet")
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    dataset = get_dataset("miniimagenet")
    dataset.download(tmp_path / "root")
    test = dataset.load(tmp_path / "root", "test")
    assert test.images.shape == (8, 3, 84, 84) and test.class_names == ["n005", "n006"]
    assert test.images[test.labels == 1].float().mean(dim=(1, 2, 3)).floor().tolist() == [60, 61, 62, 63]
    small = dataset.load(tmp_path / "root", "train", 32)
    assert small.images.shape == (12, 3, 32, 32)


def test_tieredimagenet_pickles(tmp_path):
    source = tmp_path / "tiered"
    source.mkdir()
    for split, classes in (("train", [5, 3, 4]), ("val", [6, 7]), ("test", [8, 9])):
        labels = np.repeat(classes, 3)
        images = [np.frombuffer(png(class_image(c, i % 3, 84)), dtype=np.uint8) for i, c in enumerate(labels)]
        with open(source / f"{split}_images_png.pkl", "wb") as fh:
            pickle.dump(images, fh)
        general = labels // 4
        with open(source / f"{split}_labels.pkl", "wb") as fh:
            pickle.dump(
                {
                    "label_specific": labels,
                    "label_general": general,
                    "label_specific_str": [f"c{k}" for k in range(10)],
                    "label_general_str": ["animals", "tools", "food"],
                },
                fh,
            )
    assert run_cli("data", "prepare", "tieredimagenet", "--from", source, "--root", tmp_path / "root") == 0
    train = get_dataset("tieredimagenet").load(tmp_path / "root", "train")
    assert train.class_names == ["c3", "c4", "c5"] and train.group_names == ["animals", "tools"]
    assert train.class_groups.tolist() == [0, 1, 1]
    assert train.images[train.labels == 0].float().mean(dim=(1, 2, 3)).tolist() == [30, 31, 32]


def write_cifar_tree(write, classes_per_split={"train": ["apple", "bee"], "val": ["cup"], "test": ["dog", "elm"]}):
    for split, classes in classes_per_split.items():
        write(f"cifar100/splits/bertinetto/{split}.txt", "\n".join(classes).encode())
        for c in classes:
            for i in range(3):
                write(f"cifar100/data/{c}/{c}_{i}.png", png(class_image(ord(c[0]) - 97, i, 32)))


def test_cifarfs_zip_and_extracted_folder(tmp_path, monkeypatch):
    (tmp_path / "mirror" / "cifarfs").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "mirror" / "cifarfs" / "cifar100.zip", "w") as archive:
        write_cifar_tree(archive.writestr)
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    dataset = get_dataset("cifarfs")
    dataset.download(tmp_path / "root")
    test = dataset.load(tmp_path / "root", "test")
    assert test.class_names == ["dog", "elm"] and test.images.shape == (6, 3, 32, 32)
    assert test.images[test.labels == 1].float().mean(dim=(1, 2, 3)).tolist() == [40, 41, 42]

    extracted = tmp_path / "extracted"

    def write_file(name, data):
        (extracted / name).parent.mkdir(parents=True, exist_ok=True)
        (extracted / name).write_bytes(data)

    write_cifar_tree(write_file)
    dataset.prepare_from(tmp_path / "root2", extracted)
    assert torch.equal(dataset.load(tmp_path / "root2", "test").images, test.images)


def test_fc100_zip_and_pickles(tmp_path, monkeypatch):
    def pickle_split(classes):
        labels = np.repeat(classes, 2)
        return pickle.dumps(
            {"data": np.stack([class_image(c, i % 2, 32) for i, c in enumerate(labels)]), "labels": labels.tolist()}
        )

    splits = {"train": [7, 2, 5], "val": [11], "test": [20, 13]}
    (tmp_path / "mirror" / "fc100").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "mirror" / "fc100" / "fc100.zip", "w") as archive:
        for split, classes in splits.items():
            archive.writestr(f"FC100_{split}.pickle", pickle_split(classes))
    monkeypatch.setenv("HARNESS_DATA_MIRROR", str(tmp_path / "mirror"))
    dataset = get_dataset("fc100")
    dataset.download(tmp_path / "root")
    train = dataset.load(tmp_path / "root", "train")
    assert train.class_names == ["cifar100-2", "cifar100-5", "cifar100-7"]
    assert train.images.float().mean(dim=(1, 2, 3)).tolist() == [20, 21, 50, 51, 70, 71]

    loose = tmp_path / "loose"
    loose.mkdir()
    for split, classes in splits.items():
        (loose / f"FC100_{split}.pickle").write_bytes(pickle_split(classes))
    dataset.prepare_from(tmp_path / "root2", loose)
    assert torch.equal(dataset.load(tmp_path / "root2", "test").images, dataset.load(tmp_path / "root", "test").images)


def test_prepare_from_a_folder_without_the_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="fc100.zip not found in it.*FC100_train.pickle"):
        get_dataset("fc100").prepare_from(tmp_path / "root", tmp_path / "empty")


def test_data_status_cli(tmp_path, capsys):
    assert run_cli("data", "status", "--root", tmp_path) == 0
    out = capsys.readouterr().out
    assert "synthetic-glyphs  ready" in out and "mini-imagenet-cache-train.pkl ✗" in out


# ------------------------------------------------------------------ the embedded benchmark


def test_synthetic_glyphs_are_deterministic_and_disjoint():
    dataset = get_dataset("synthetic-glyphs")
    train, val, test = (dataset.load(Path(), s) for s in ("train", "val", "test"))
    assert (train.num_classes, val.num_classes, test.num_classes) == (160, 32, 64)
    assert len(test.images) == 64 * 20 and test.images.shape[1:] == (1, 28, 28)
    assert set(train.class_names).isdisjoint(test.class_names) and set(val.class_names).isdisjoint(test.class_names)
    from harness.data.synthetic import generate

    generate.cache_clear()
    assert torch.equal(dataset.load(Path(), "test").images, test.images)
    # instances of a class differ (distortions) but stay closer to each other than to other classes
    x = test.images.float().flatten(1)
    same = torch.cdist(x[:20], x[:20]).mean()
    other = torch.cdist(x[:20], x[20:40]).mean()
    assert 0 < same < other


# ------------------------------------------------------------------ training-split transforms


def make_imageset(classes=6, per_class=10, groups=(0, 0, 0, 1, 1, 2)):
    from harness.data.base import ImageSet

    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    return ImageSet(images, labels, [f"c{i}" for i in range(classes)], torch.tensor(groups), ["A", "B", "C"], "toy")


def test_train_fraction_is_stratified_nested_and_fixed():
    full = make_imageset()
    tenth, half = subsample(full, 0.1), subsample(full, 0.5)
    assert torch.bincount(tenth.labels).tolist() == [1] * 6 and torch.bincount(half.labels).tolist() == [5] * 6
    assert set(tenth.images[:, 0, 0, 0].tolist()) <= set(half.images[:, 0, 0, 0].tolist())
    assert torch.equal(subsample(full, 0.5).images, half.images)
    assert half.identity == "toy~0.5"


def test_holdout_group_becomes_validation():
    rest, held = split_off_group(make_imageset(), "B", get_dataset("omniglot-small1"))
    assert held.class_names == ["c3", "c4"] and held.labels.unique().tolist() == [0, 1]
    assert rest.class_names == ["c0", "c1", "c2", "c5"] and rest.group_names == ["A", "C"]
    assert rest.class_groups.tolist() == [0, 0, 0, 1]
    with pytest.raises(UnknownNameError, match="unknown alphabet 'D'.*Valid alphabets: A, B, C"):
        split_off_group(make_imageset(), "D", get_dataset("omniglot-small1"))


def test_rotations_add_three_classes_per_class():
    base = make_imageset()
    base.images[0, 0, 0, 1] = 200
    rotated = rotate_classes(base)
    assert rotated.num_classes == 24 and len(rotated.images) == 240
    assert torch.equal(rotated.images[60], torch.rot90(base.images[0], 1, dims=(1, 2)))
    assert rotated.labels[60] == 6 and rotated.class_names[6] == "c0@90"
