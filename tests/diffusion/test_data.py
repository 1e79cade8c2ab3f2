"""Image records, the three loaders, the task split and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.diffusion.data import (
    ImageRecord,
    load_digits,
    load_image_folder,
    load_mnist,
    records_from_arrays,
    to_tensor,
)
from obliviate.diffusion.task import TaskConfig, build_task


def test_mnist_is_real_and_resized():
    records = load_mnist(16)
    assert len(records) == 5000
    assert records[0].pixels.shape == (1, 16, 16) and records[0].pixels.dtype == np.uint8
    assert np.bincount([r.label for r in records]).tolist() == [500] * 10
    assert records[0].pixels.max() > 200  # ink survives the resize


def test_digits_8x8():
    records = load_digits()
    assert len(records) == 1797 and records[0].pixels.shape == (1, 8, 8)


def test_record_key_and_hash_depend_on_pixels_and_label():
    pixels = np.zeros((1, 4, 4), np.uint8)
    a, b = ImageRecord(pixels, 1), ImageRecord(pixels.copy(), 1)
    assert a.key() == b.key() and a.to_dict() == b.to_dict()
    assert ImageRecord(pixels, 2).key() != a.key()
    other = pixels.copy()
    other[0, 0, 0] = 1
    assert ImageRecord(other, 1).to_dict()["sha256"] != a.to_dict()["sha256"]
    assert DataSplit("x", [a]).sha256 == DataSplit("y", [b]).sha256


def test_overlap_between_forget_and_retain_is_refused():
    pixels = np.full((1, 4, 4), 7, np.uint8)
    split = DataSplit("forget", [ImageRecord(pixels, 3)])
    task = UnlearningTask("t", "diffusion", split, DataSplit("retain", [ImageRecord(pixels, 3)]))
    with pytest.raises(DataError, match="both the forget and the retain"):
        task.validate()


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((3, 4)), [0, 1, 2], "must be"),
    (np.zeros((2, 4, 4)), [0, 1, 2], "labels of shape"),
    (np.full((2, 4, 4), 3.0), [0, 1], r"\[0, 1\]"),
    (np.zeros((2, 2, 4, 4), np.uint8), [0, 1], "1 or 3 channels"),
])
def test_bad_arrays(images, labels, match):
    with pytest.raises(DataError, match=match):
        records_from_arrays(images, labels, "arrays")


def _png(path, size, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def test_image_folder_any_resolution(tmp_path):
    _png(tmp_path / "cats" / "a.png", 40)
    _png(tmp_path / "cats" / "b.png", 12, 30)
    _png(tmp_path / "dogs" / "c.png", 64)
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"\0junk")
    records, names = load_image_folder(tmp_path, size=8)
    assert names == ["cats", "dogs"]
    assert [r.label for r in records] == [0, 0, 1]
    assert all(r.pixels.shape == (1, 8, 8) for r in records)
    rgb, _ = load_image_folder(tmp_path, size=8, channels=3)
    assert rgb[0].pixels.shape == (3, 8, 8)
    x, y = to_tensor(records)
    assert x.shape == (3, 1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_image_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "missing", 8)
    (tmp_path / "flat.png").write_bytes(b"x")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        load_image_folder(tmp_path, 8)
    _png(tmp_path / "empty" / "ok.png", 10)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.txt: cannot read image \(not an image\)"):
        load_image_folder(tmp_path, 8)


def test_task_split_is_seeded_and_disjoint():
    config = TaskConfig(dataset="digits", image_size=8, forget_classes=["3"])
    a, b = build_task(config, seed=0), build_task(config, seed=0)
    assert a.forget.sha256 == b.forget.sha256 and a.metadata["forget_classes"] == [3]
    assert {r.label for r in a.forget} == {3} and 3 not in {r.label for r in a.retain}
    held = {r.key() for r in a.eval_splits["holdout"]}
    assert not held & {r.key() for r in a.full}
    assert build_task(config, seed=1).forget.sha256 != a.forget.sha256


@pytest.mark.parametrize("classes, match", [([10], "out of range"), (["cat"], "unknown class"),
                                            (list(range(10)), "nothing to retain")])
def test_bad_forget_classes(classes, match):
    with pytest.raises(ConfigError, match=match):
        build_task(TaskConfig(dataset="digits", image_size=8, forget_classes=classes))


def test_a_benchmark_is_chosen_by_name_and_dataset_is_its_older_spelling(tmp_path):
    """`task.benchmark` selects a registered benchmark; `dataset: digits` reads as
    `benchmark: digits` (the same split hashes) and `dataset: folder` as `image_folder`."""
    from obliviate.core.recipe import validate

    named = validate(TaskConfig, {"benchmark": "digits", "image_size": 8,
                                  "forget_classes": [3]})
    old = validate(TaskConfig, {"dataset": "digits", "image_size": 8, "forget_classes": [3]})
    assert named.benchmark == old.benchmark == "digits" and "dataset" not in old.model_dump()
    a, b = build_task(named), build_task(old)
    assert a.name == "digits-forget-3" and a.metadata["benchmark"] == "digits"
    assert (a.forget.sha256, a.retain.sha256) == (b.forget.sha256, b.retain.sha256)
    for name in ("a", "b"):
        _png(tmp_path / name / "x.png", 10)
        _png(tmp_path / name / "y.png", 12, 30)
    folder = validate(TaskConfig, {"dataset": "folder", "path": str(tmp_path), "image_size": 8,
                                   "forget_classes": ["a"], "holdout_fraction": 0.0})
    task = build_task(folder)
    assert folder.benchmark == "image_folder" and task.name == "folder-forget-a"
    assert len(task.forget) == len(task.retain) == 2


def test_an_unknown_benchmark_or_key_is_one_line_naming_it():
    from obliviate.core.recipe import validate

    with pytest.raises(ConfigError) as err:
        validate(TaskConfig, {"benchmark": "cifar"}, source="r.yaml")
    message = str(err.value)
    assert "\n" not in message and "unknown benchmark 'cifar' for diffusion; known: " in message
    assert all(name in message for name in ("digits", "image_folder", "mnist"))
    with pytest.raises(ConfigError, match=r"r\.yaml: image_sise: Extra inputs"):
        validate(TaskConfig, {"benchmark": "mnist", "image_sise": 8}, source="r.yaml")
