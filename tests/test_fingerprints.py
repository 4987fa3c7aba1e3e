"""Stage fingerprints cover content: a backbone folder's files and the image files behind a paths column are hashed
(cached by path, size and mtime), so that a change in place redoes the stages that depend on it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import load_file, save_file
from test_pipeline import _precomputed_dataset, _tiny_args

from mmoe.training import records
from mmoe.training.cli import train
from mmoe.training.records import dataset_fingerprint, fingerprint_cache_path, folder_fingerprint
from mmoe.training.stages.context import StageContext

STAGES = ("categorize", "baseline", "experts", "router")


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A private on-disk cache and an empty in-process one; returns the list of files hashed (read) since."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(records, "_memory_hashes", {})
    hashed: list[Path] = []
    original = records._hash_file

    def counting(path: Path) -> str:
        hashed.append(Path(path))
        return original(path)

    monkeypatch.setattr(records, "_hash_file", counting)
    return hashed


def _age(path: Path, seconds: float = 60.0) -> None:
    """Set the file's mtime in the past: a file written in the last 2 s is not cached (it could change again
    within the file system's timestamp granularity)."""
    past = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(past, past))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "backbone"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"weights-0" * 1000)
    (folder / "sub").mkdir()  # sub-folders are not part of a backbone's files
    for path in folder.iterdir():
        _age(path)
    return folder


def test_folder_fingerprint_follows_content_and_uses_the_cache(tmp_path, fresh_cache):
    folder = _folder(tmp_path)
    first = folder_fingerprint(folder)
    assert isinstance(first, str) and len(first) == 16
    assert sorted(path.name for path in fresh_cache) == ["config.json", "model.safetensors"]

    fresh_cache.clear()
    assert folder_fingerprint(folder) == first  # in-process cache
    assert folder_fingerprint(str(folder)) == first
    assert fresh_cache == []

    records._memory_hashes.clear()  # a new process: the on-disk cache answers
    assert folder_fingerprint(folder) == first
    assert fresh_cache == []
    cached = json.loads(fingerprint_cache_path().read_text())
    assert str((folder / "model.safetensors").resolve()) in cached["files"]
    assert fingerprint_cache_path().is_relative_to(tmp_path / "xdg-cache")

    # the same number of bytes, changed in place: the size is the same, the mtime is not
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.write(b"weights-1")
    assert weights.stat().st_size == 9000
    second = folder_fingerprint(folder)
    assert second != first
    assert [path.name for path in fresh_cache] == ["model.safetensors"]

    # back to the first bytes: back to the first fingerprint (content, not mtime, is what is fingerprinted)
    with open(weights, "r+b") as handle:
        handle.write(b"weights-0")
    assert folder_fingerprint(folder) == first

    (folder / "tokenizer.json").write_text("{}")  # a new file counts too
    assert folder_fingerprint(folder) not in (first, second)


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, fresh_cache):
    folder = _folder(tmp_path)
    expected = folder_fingerprint(folder)
    fingerprint_cache_path().write_text("{not json")
    records._memory_hashes.clear()
    fresh_cache.clear()
    assert folder_fingerprint(folder) == expected
    assert len(fresh_cache) == 2  # rehashed, since the cache was unreadable
    assert json.loads(fingerprint_cache_path().read_text())["version"] == 1


def test_symlinks_are_followed_and_non_folders_give_none(tmp_path, fresh_cache):
    target = tmp_path / "elsewhere.safetensors"
    target.write_bytes(b"a" * 64)
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(target)
    first = folder_fingerprint(folder)
    target.write_bytes(b"b" * 64)
    assert folder_fingerprint(folder) != first
    assert folder_fingerprint("sentence-transformers/all-MiniLM-L6-v2") is None  # a Hub id
    assert folder_fingerprint(target) is None  # a file
    assert folder_fingerprint(None) is None


def test_stage_inputs_name_the_unimodal_backbone_content_for_categorization(tmp_path, fresh_cache):
    folder = _folder(tmp_path)
    ctx = SimpleNamespace(backbone=str(folder),
                          args=SimpleNamespace(unimodal_backbone=str(folder), output_dir=str(tmp_path / "out")))
    content = StageContext._content_inputs(ctx, "categorize")
    expected = folder_fingerprint(folder)
    assert content == {"backbone_content": expected, "unimodal_backbone_content": expected}
    assert StageContext._content_inputs(ctx, "baseline") == {"backbone_content": content["backbone_content"]}
    ctx.args.unimodal_backbone = "tiny-bert"  # a test backbone's name: nothing written, nothing hashed
    assert StageContext._content_inputs(ctx, "categorize")["unimodal_backbone_content"] is None
    assert not (tmp_path / "out").exists()


def _stage_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("Stage ")]


def test_a_backbone_changed_in_place_redoes_the_stages(tmp_path, tiny_bert_dir, fresh_cache, caplog):
    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_bert_dir, backbone)
    data = _precomputed_dataset(tmp_path / "data", n_train=24, n_eval=12)
    args = _tiny_args(backbone, data, tmp_path / "out", "--max_steps", "1")
    train(args)
    record = json.loads((tmp_path / "out" / "baseline" / "stage_complete.json").read_text())
    assert record["inputs"]["backbone_content"] == folder_fingerprint(backbone)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmoe"):
        train(args)  # nothing changed
    messages = _stage_messages(caplog)
    for stage in STAGES:
        assert f"Stage {stage} already finished with the same inputs; skipping it" in " ".join(messages), stage
    assert not any("inputs changed" in message for message in messages)

    weights = load_file(backbone / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, backbone / "model.safetensors")  # same path, same name, same size: new content

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmoe"):
        train(args)
    messages = _stage_messages(caplog)
    assert not any("already finished" in message for message in messages)
    baseline = [message for message in messages if message.startswith("Stage baseline: its inputs changed")]
    assert len(baseline) == 1 and "backbone_content" in baseline[0] and "redoing it" in baseline[0]
    assert any(m.startswith("Stage categorize: its inputs changed") and "backbone_content" in m for m in messages)
    record = json.loads((tmp_path / "out" / "baseline" / "stage_complete.json").read_text())
    assert record["inputs"]["backbone_content"] == folder_fingerprint(backbone)


def _png(path: Path, color: tuple[int, int, int]) -> None:
    Image.new("RGB", (4, 4), color).save(path)
    _age(path)


def test_image_files_behind_a_paths_column_are_fingerprinted(tmp_path, fresh_cache, monkeypatch):
    for index in range(3):
        _png(tmp_path / f"{index}.png", (index * 40, 0, 0))
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the working directory, as the collators do
    paths = ["0.png", str(tmp_path / "1.png"), "2.png"]
    as_strings = Dataset.from_dict({"image": paths, "label": [0, 1, 0]})
    as_images = as_strings.cast_column("image", ImageFeature())  # {"bytes": None, "path": ...} cells
    embedded = Dataset.from_dict({"image": [Image.new("RGB", (4, 4))] * 3, "label": [0, 1, 0]})

    before = {
        "strings": dataset_fingerprint(as_strings, image_column="image"),
        "images": dataset_fingerprint(as_images, image_column="image"),
        "identity": dataset_fingerprint(as_strings, image_column="image", identity="source-files"),
    }
    assert before["strings"] != dataset_fingerprint(as_strings)  # the files' content is part of it
    assert before["identity"] != "source-files"
    assert dataset_fingerprint(as_strings, image_column="image") == before["strings"]  # stable
    # no file behind the column (embedded images, no such column): as without image_column
    assert dataset_fingerprint(embedded, image_column="image") == dataset_fingerprint(embedded)
    assert dataset_fingerprint(as_strings, image_column="photo") == dataset_fingerprint(as_strings)
    assert dataset_fingerprint(as_strings, identity="source-files") == "source-files"

    fresh_cache.clear()
    dataset_fingerprint(as_images, image_column="image")
    assert fresh_cache == []  # cached by path, size and mtime

    plain = dataset_fingerprint(as_strings)
    _png(tmp_path / "2.png", (0, 0, 200))  # the same file name, new pixels
    after = {
        "strings": dataset_fingerprint(as_strings, image_column="image"),
        "images": dataset_fingerprint(as_images, image_column="image"),
        "identity": dataset_fingerprint(as_strings, image_column="image", identity="source-files"),
    }
    assert all(after[key] != before[key] for key in before)
    assert dataset_fingerprint(as_strings) == plain  # datasets' own fingerprint does not see it
