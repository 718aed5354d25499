"""Data checked by content (harness/data/content.py): Omniglot accepted in any container of Lake's pixels and
refused, naming the character, when one pixel differs; miniImageNet found by file name in any layout with the
split as package data; the split files' counts; the content digests in the manifest and in every record."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import content, get_dataset, miniimagenet, omniglot
from harness.data.integrity import load_cache

from conftest import MIRROR, one_error, only_run, run_cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def drawing(character: int, drawer: int) -> np.ndarray:
    """A 105×105 1-bit drawing, distinct per character and drawer (True: paper, False: ink)."""
    image = np.ones((105, 105), dtype=bool)
    image[10 + character : 30 + character, 10 + drawer : 40 + drawer] = False
    return image


def png(image: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", **options)
    return out.getvalue()


CHARACTERS = {"images_background": ("Alpha", "Beta"), "images_evaluation": ("Gamma",)}


def members(top: str, changed: str = "") -> dict[str, np.ndarray]:
    """``<top>/<Alphabet>/characterNN/<file>.png`` → drawing; ``changed`` (``Alphabet/characterNN``) has one
    pixel of its third drawing flipped."""
    files = {}
    for a, alphabet in enumerate(CHARACTERS[top]):
        for c in range(1, 4):
            for drawer in range(1, 5):
                image = drawing(3 * a + c, drawer)
                if f"{alphabet}/character{c:02d}" == changed and drawer == 3:
                    image[60, 60] = not image[60, 60]
                files[f"{top}/{alphabet}/character{c:02d}/{100 * a + c:04d}_{drawer:02d}.png"] = image
    return files


def write_zip(path: Path, top: str, changed: str = "", **png_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=png_options.pop("compression", zipfile.ZIP_DEFLATED)) as archive:
        for name, image in sorted(members(top, changed).items(), reverse=bool(png_options.pop("reverse", False))):
            archive.writestr(name, png(image, **png_options))
    return path


def write_folder(folder: Path, top: str, changed: str = "") -> Path:
    for name, image in members(top, changed).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png(image))
    return folder / top


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Path:
    """Stand-in "published" Omniglot: two zips whose per-character digests the harness pins (as it pins Lake's)."""
    published = tmp_path / "published"
    pins = {}
    for top in CHARACTERS:
        path = write_zip(published / f"{top}.zip", top)
        pins[path.name] = omniglot.decoded_characters(omniglot.read_alphabets(path))
    monkeypatch.setattr(omniglot, "published_characters", lambda: pins)
    return published  # not Lake's bytes: only their content can make them accepted


def prepared_content(root: Path) -> dict:
    manifest = content.read_manifest(root / "omniglot" / "cache" / "omniglot")
    return {split: facts["content_sha256"] for split, facts in manifest["splits"].items()}


def test_two_containers_of_the_same_pixels_have_one_content_digest(lake, tmp_path):
    repacked = tmp_path / "repacked"
    for top in CHARACTERS:  # other PNG encoding, no compression, other member order: other bytes, same pixels
        write_zip(repacked / f"{top}.zip", top, compression=zipfile.ZIP_STORED, compress_level=9, reverse=True)
    unpacked = tmp_path / "unpacked"
    for top in CHARACTERS:
        write_folder(unpacked, top)
    assert (lake / "images_background.zip").read_bytes() != (repacked / "images_background.zip").read_bytes()
    digests = []
    for source in (lake, repacked, unpacked):
        root = tmp_path / f"root-{source.name}"
        assert run_cli("data", "prepare", "omniglot", "--from", source, "--root", root) == 0
        digests.append(prepared_content(root))
    assert digests[0] == digests[1] == digests[2] and set(digests[0]) == {"train", "test"}
    train = get_dataset("omniglot").load(tmp_path / "root-unpacked", "train", 28)
    assert train.num_classes == 6 and train.group_names == ["Alpha", "Beta"]


def test_a_copy_with_one_pixel_changed_is_refused_naming_its_character(lake, tmp_path, capsys):
    for layout in ("zip", "folder"):
        source = tmp_path / f"changed-{layout}"
        write = write_zip if layout == "zip" else write_folder
        write(source / "images_background.zip" if layout == "zip" else source, "images_background")
        write(
            source / "images_evaluation.zip" if layout == "zip" else source,
            "images_evaluation",
            changed="Gamma/character02",
        )
        root = tmp_path / f"root-{layout}"
        assert run_cli("data", "prepare", "omniglot", "--from", source, "--root", root) == 2
        err = one_error(capsys)
        assert "Gamma/character02" in err and "differ" in err and "images_evaluation" in err, err
        assert not (root / "omniglot" / "cache").exists() and not (root / "omniglot" / "raw").exists()


def test_a_content_verified_copy_is_linked_recorded_and_reported(lake, tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    assert run_cli("data", "prepare", "omniglot", "--from", lake, "--root", root) == 0
    record = json.loads((root / "omniglot" / "raw" / "prepared-from.json").read_text(encoding="utf-8"))
    entry = record["files"]["images_background.zip"]
    assert entry["verified"] == "content" and len(entry["content_sha256"]) == 64
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "250")
    assert run_cli("data", "status", "omniglot", "--root", root) == 0
    out = capsys.readouterr().out
    assert "ready" in out and prepared_content(root)["train"][:12] in out
    assert run_cli("data", "verify", "omniglot", "--root", root) == 0  # accepted by content, not refused by SHA256


@pytest.mark.skipif(
    not (SHARED / "omniglot-rebuilt" / "images_background.zip").is_file(), reason="needs ../shared/data"
)
def test_published_digests_match_lakes_own_files_and_the_rebuilt_full_set():
    """The package's per-character pins equal the characters of Lake's own small-set zip (byte-identical to
    the published file) and every character of the full set in ../shared/data."""
    pins = omniglot.published_characters()
    assert len(pins["images_background.zip"]) == 964 and len(pins["images_evaluation.zip"]) == 659
    if MIRROR and (Path(MIRROR) / "omniglot" / "images_background_small1.zip").is_file():
        small = omniglot.decoded_characters(
            omniglot.read_alphabets(Path(MIRROR) / "omniglot" / "images_background_small1.zip")
        )
        assert len(small) == 136 and all(pins["images_background.zip"][name] == d for name, d in small.items())
    full = omniglot.decoded_characters(omniglot.read_alphabets(SHARED / "omniglot-rebuilt" / "images_evaluation.zip"))
    assert content.first_difference(full, pins["images_evaluation.zip"]) is None


def test_split_package_data_counts():
    vinyals = omniglot.vinyals_split()
    assert {role: len(chars) for role, chars in vinyals.items()} == {"train": 1028, "val": 172, "test": 423}
    every = [c for chars in vinyals.values() for c in chars]
    pinned = {c for chars in omniglot.published_characters().values() for c in chars}
    assert len(set(every)) == 1623 and set(every) == pinned  # disjoint, and exactly Lake's characters
    ravi = miniimagenet.ravi_split()
    assert {role: len(classes) for role, classes in ravi.items()} == {"train": 64, "val": 16, "test": 20}
    assert all(len(files) == 600 for classes in ravi.values() for files in classes.values())
    names = [f for classes in ravi.values() for files in classes.values() for f in files]
    assert len(set(names)) == 60_000 and all(f.startswith(w) for c in ravi.values() for w, fs in c.items() for f in fs)
    get_dataset("omniglot-vinyals")  # registered
    assert run_cli("list", "benchmarks") == 0


# ------------------------------------------------------------------ miniImageNet by file name

SMALL_SPLIT = {
    "train": {"n01000001": ("n0100000100000001.jpg", "n0100000100000007.jpg"), "n01000002": ("n0100000200000003.jpg",)},
    "val": {"n01000003": ("n0100000300000002.jpg",)},
    "test": {"n01000004": ("n0100000400000004.jpg", "n0100000400000005.jpg")},
}


def mini_image(name: str) -> Image.Image:
    value = int(name[7:9]) * 20 + int(name[15:17])
    return Image.fromarray(np.full((84, 84, 3), value, dtype=np.uint8))


def write_mini(folder: Path, layout: str) -> Path:
    for role, classes in SMALL_SPLIT.items():
        for wnid, files in classes.items():
            for name in files:
                where = {"flat": folder / "images", "per-class": folder / role / wnid, "mixed": folder / "a" / wnid[-1]}
                where[layout].mkdir(parents=True, exist_ok=True)
                mini_image(name).save(where[layout] / name, quality=95)
    return folder


@pytest.fixture
def small_split(monkeypatch):
    monkeypatch.setattr(miniimagenet, "ravi_split", lambda: SMALL_SPLIT)


def test_miniimagenet_images_are_found_by_file_name_in_any_layout(small_split, tmp_path):
    digests = []
    for layout in ("flat", "per-class", "mixed"):
        root = tmp_path / f"root-{layout}"
        source = write_mini(tmp_path / layout, layout)
        assert run_cli("data", "prepare", "miniimagenet", "--from", source, "--root", root) == 0
        manifest = content.read_manifest(root / "miniimagenet" / "cache" / "miniimagenet")
        digests.append({split: facts["content_sha256"] for split, facts in manifest["splits"].items()})
        assert manifest["splits"]["train"]["images"] == 3 and manifest["splits"]["train"]["decoders"]["pillow"]
    assert digests[0] == digests[1] == digests[2]
    test = get_dataset("miniimagenet").load(tmp_path / "root-flat", "test")
    assert test.class_names == ["n01000004"] and test.images.shape == (2, 3, 84, 84)
    assert abs(test.images[1].float().mean().item() - (4 * 20 + 5)) < 2  # JPEG, so approximately


@pytest.mark.parametrize("problem", ["missing", "extra", "twice"])
def test_a_missing_extra_or_doubled_miniimagenet_image_is_named(small_split, tmp_path, capsys, problem):
    source = write_mini(tmp_path / "copy", "per-class")
    if problem == "missing":
        (source / "val" / "n01000003" / "n0100000300000002.jpg").unlink()
        named = "n0100000300000002.jpg"
    elif problem == "extra":
        mini_image("n0100000900000009.jpg").save(source / "train" / "n01000001" / "n0100000900000009.jpg")
        named = "n0100000900000009.jpg"
    else:
        mini_image("n0100000400000005.jpg").save(source / "n0100000400000005.jpg")
        named = "n0100000400000005.jpg"
    root = tmp_path / "root"
    assert run_cli("data", "prepare", "miniimagenet", "--from", source, "--root", root) == 2
    err = one_error(capsys)
    assert named in err and {"missing": "missing", "extra": "not part of the split", "twice": "twice"}[problem] in err
    assert not (root / "miniimagenet").exists()


def test_a_cache_is_memory_mapped_not_copied(small_split, tmp_path):
    """A process maps the decoded cache file (shared with every other process through the page cache)."""
    root = tmp_path / "root"
    assert run_cli("data", "prepare", "miniimagenet", "--from", write_mini(tmp_path / "m", "flat"), "--root", root) == 0
    dataset = get_dataset("miniimagenet")
    images = dataset.load(root, "train").images
    cache = str(dataset.cache_path(root, "train", 84).resolve())
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(cache):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((start, end))
    assert spans and any(start <= images.data_ptr() < end for start, end in spans)
    assert torch.equal(images, load_cache(dataset.cache_path(root, "train", 84))["images"])


def test_a_record_names_the_content_it_was_measured_on(tmp_path):
    runs = tmp_path / "runs"
    assert run_cli("run", "--method", "pixels", "--bench", "synthetic-5w1s", "--runs-dir", runs, "--no-progress") == 0
    data = json.loads((only_run(runs) / "result.json").read_text(encoding="utf-8"))["data"]
    assert data["dataset"] == "synthetic-glyphs" and set(data["content_sha256"]) == {"test"}
    assert all(len(d) == 64 for d in data["content_sha256"].values())


def test_a_new_image_size_decodes_from_the_cache_when_a_linked_source_is_gone(lake, tmp_path, monkeypatch):
    """Grey images rebuilt from the native-size cache (their linked sources deleted) stay 2-D for PIL."""
    import errno
    import os

    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)  # symlinks, as across filesystems
    copy = tmp_path / "copy"
    copy.mkdir()
    for zip_file in lake.iterdir():
        (copy / zip_file.name).write_bytes(zip_file.read_bytes())
    root = tmp_path / "root"
    assert run_cli("data", "prepare", "omniglot", "--from", copy, "--root", root) == 0
    for zip_file in copy.iterdir():
        zip_file.unlink()
    train = get_dataset("omniglot").load(root, "train", 32)
    assert train.images.shape == (24, 1, 32, 32) and train.num_classes == 6
