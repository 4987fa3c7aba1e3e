"""Data from anywhere ``datasets`` reads: ``--dataset_name``, ``--train_file``/``--validation_file``/``--test_file``,
``--validation_split_percentage`` and ``--image_root`` (issue 24), and the README's "Bring your own data" examples,
run as written with a tiny backbone."""

from __future__ import annotations

import csv
import json
import random
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from PIL import Image

from mmoe.training import cli
from mmoe.training.arguments import DataArguments
from mmoe.training.cli import main, train
from mmoe.training.sources import load_source, source_identity, source_name
from mmoe.training.validation import ArgumentsError, dataset_problems

README = Path(__file__).resolve().parents[1] / "README.md"
SPEED = shlex.split(
    "--max_steps 1 --num_folds 2 --unimodal_num_train_epochs 1 --min_expert_examples 2 --disable_tqdm true "
    "--per_device_train_batch_size 8 --report_to none"
)


# ------------------------------------------------------------------------------------------ tiny files
def _claims(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Deliberately easy rows: the evidence names a place whose temperature the claim states or contradicts."""
    rng = random.Random(seed)
    facts = {"snow": "cold", "beach": "warm", "desert": "warm", "glacier": "cold"}
    rows = []
    for i in range(n):
        place, claimed = rng.choice(list(facts)), ["cold", "warm"][i % 2]
        rows.append({"claim": f"it is {claimed} there", "evidence": f"a photo of the {place}",
                     "label": int(facts[place] == claimed)})
    return rows


def _posts(n: int) -> list[dict[str, Any]]:
    return [{"caption": f"a {'sunny' if i % 2 else 'rainy'} street", "text": f"{'great' if i % 2 else 'awful'} day",
             "label": i % 2} for i in range(n)]


def _write_csv(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write_image(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)
    return path


def _readme_command(marker: str) -> list[str]:
    """The ```bash block after ``marker`` in README.md, as an argv without ``mmoe-train``."""
    text = README.read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"README marker {marker!r} not found once"
    block = re.search(r"```bash\n(.*?)```", text[text.index(marker):], flags=re.S).group(1)
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[0] == "mmoe-train"
    return argv[1:]


def _substitute(argv: list[str], backbone: str) -> list[str]:
    """The README's backbone replaced by a tiny one (no download)."""
    i = argv.index("--backbone")
    return [*argv[:i + 1], backbone, *argv[i + 2:]]


# ------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_data_files_load_with_their_splits(tmp_path: Path, suffix: str) -> None:
    rows = _claims(12)
    files = {}
    for split in ("train", "validation", "test"):
        path = tmp_path / f"{split}{suffix}"
        if suffix in (".csv", ".tsv"):
            _write_csv(path, rows, delimiter="\t" if suffix == ".tsv" else ",")
        elif suffix == ".jsonl":
            _write_jsonl(path, rows)
        elif suffix == ".json":
            path.write_text(json.dumps(rows), encoding="utf-8")
        else:
            Dataset.from_list(rows).to_parquet(str(path))
        files[f"{split}_file"] = str(path)
    dataset = load_source(DataArguments(**files))
    assert sorted(dataset) == ["test", "train", "validation"]
    assert all(len(split) == 12 for split in dataset.values())
    assert dataset["train"].column_names == ["claim", "evidence", "label"]
    assert dataset["train"][0] == rows[0]


def test_missing_validation_split_is_carved_with_the_percentage(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = _write_jsonl(tmp_path / "posts.jsonl", _posts(40))
    with caplog.at_level("INFO", logger="mmoe.training.sources"):
        dataset = load_source(DataArguments(train_file=str(path), validation_split_percentage=20))
    assert (len(dataset["train"]), len(dataset["validation"])) == (32, 8)
    assert "test" not in dataset
    carved = [r.getMessage() for r in caplog.records if "held out as validation" in r.getMessage()]
    assert len(carved) == 1 and "8 of its 40 training rows (20%" in carved[0]
    again = load_source(DataArguments(train_file=str(path), validation_split_percentage=20))
    assert again["validation"]["text"] == dataset["validation"]["text"]  # a fixed seed: the same rows each time
    ten = load_source(DataArguments(train_file=str(path)))  # default 10 %
    assert (len(ten["train"]), len(ten["validation"])) == (36, 4)
    # max samples apply after the carving
    capped = load_source(DataArguments(train_file=str(path), max_train_samples=5, max_eval_samples=3))
    assert (len(capped["train"]), len(capped["validation"])) == (5, 3)


def test_dataset_name_loads_a_local_folder_and_a_loader_with_data_dir(tmp_path: Path) -> None:
    folder = tmp_path / "my-claims"
    folder.mkdir()
    _write_csv(folder / "train.csv", _claims(20))
    _write_csv(folder / "validation.csv", _claims(6, seed=1))
    dataset = load_source(DataArguments(dataset_name=str(folder)))
    assert (len(dataset["train"]), len(dataset["validation"])) == (20, 6)
    assert source_name(DataArguments(dataset_name=str(folder))) == "my-claims"
    by_loader = load_source(DataArguments(dataset_name="csv", data_dir=str(folder)))
    assert (len(by_loader["train"]), len(by_loader["validation"])) == (20, 6)


def test_image_root_resolves_relative_image_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmoe.data.images import check_images, load_image

    root = tmp_path / "pictures"
    _write_image(root / "red" / "a.png", (255, 0, 0))
    _write_image(root / "blue" / "b.png", (0, 0, 255))
    absolute = _write_image(tmp_path / "elsewhere" / "c.png", (0, 255, 0))
    rows = [{"image": "red/a.png", "text": "hot", "label": 1}, {"image": "blue/b.png", "text": "cold", "label": 0},
            {"image": str(absolute), "text": "grass", "label": 0}]
    train = _write_csv(tmp_path / "train.csv", rows)
    work = tmp_path / "work"  # the images exist only under the root, not under the working directory
    work.mkdir()
    monkeypatch.chdir(work)
    args = DataArguments(train_file=str(train), validation_file=str(train), image_root=str(root))
    assert dataset_problems(args) == []
    dataset = load_source(args, image_column="image")
    paths = dataset["train"]["image"]
    assert paths[:2] == [str(root / "red" / "a.png"), str(root / "blue" / "b.png")] and paths[2] == str(absolute)
    check_images(dataset["train"], "image")  # every image decodes from the working directory
    assert load_image(paths[0]).getpixel((0, 0)) == (255, 0, 0)
    # a datasets.Image column without embedded bytes is resolved too
    from datasets import DatasetDict
    from datasets import Image as ImageFeature

    from mmoe.training.sources import _resolve_image_paths

    split = Dataset.from_list(rows[:2]).cast_column("image", ImageFeature(decode=False))
    saved = _resolve_image_paths(DatasetDict({"train": split}), "image", str(root))
    assert saved["train"][0]["image"]["path"] == str(root / "red" / "a.png")
    assert saved["train"].features["image"] == ImageFeature(decode=False)
    with pytest.raises(ArgumentsError, match="--image_root .* needs --image_column"):
        load_source(args)


# ------------------------------------------------------------------------------------------ refusals
def _main_refuses(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmoe-train: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading anything fails the test: these refusals come before the data is read."""
    import datasets

    from mmoe.training import sources

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the data was loaded although the options are invalid")

    monkeypatch.setattr(sources, "load_source", refuse)
    monkeypatch.setattr(datasets, "load_dataset", refuse)


def test_dataset_and_dataset_name_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       no_loading: None) -> None:
    line = _main_refuses(["--dataset", "mustard", "--data_dir", str(tmp_path), "--dataset_name", "org/name",
                          "--output_dir", str(tmp_path / "out")], capsys)
    assert "--dataset mustard and --dataset_name name two data sources" in line


def test_missing_train_file_is_refused_before_anything_loads(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              no_loading: None, tiny_bert_dir: Path) -> None:
    line = _main_refuses(["--train_file", str(tmp_path / "nope.csv"), "--backbone", str(tiny_bert_dir),
                          "--text_template", "{claim} | {evidence}", "--output_dir", str(tmp_path / "out")], capsys)
    assert "--train_file" in line and "nope.csv is not an existing file" in line
    assert not (tmp_path / "out").exists()


def test_other_file_refusals(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", _claims(4))
    text = tmp_path / "train.txt"
    text.write_text("x")
    assert "unsupported extension '.txt'" in " ".join(dataset_problems(DataArguments(train_file=str(text))))
    dev = _write_jsonl(tmp_path / "dev.jsonl", _claims(4))
    assert "different formats" in " ".join(
        dataset_problems(DataArguments(train_file=str(train), validation_file=str(dev))))
    with pytest.raises(ArgumentsError, match="need\\(s\\) --train_file"):
        DataArguments(validation_file=str(train))
    with pytest.raises(ArgumentsError, match="validation_split_percentage"):
        DataArguments(train_file=str(train), validation_split_percentage=60)
    with pytest.raises(ArgumentsError, match="two data sources"):
        DataArguments(dataset_name="org/name", train_file=str(train))
    missing = dataset_problems(DataArguments(dataset_name=str(tmp_path / "no-such-folder")))
    assert len(missing) == 1 and "--dataset_name" in missing[0] and "not an existing folder" in missing[0]


def test_a_hub_id_offline_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch, tiny_bert_dir: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets", raising=False)
    line = _main_refuses(["--dataset_name", "some-org/not-cached-anywhere", "--backbone", str(tiny_bert_dir),
                          "--text_template", "{claim} | {evidence}", "--output_dir", str(tmp_path / "out")], capsys)
    assert "--dataset_name some-org/not-cached-anywhere could not be loaded" in line
    assert "HF_HUB_OFFLINE" in line


# ------------------------------------------------------------------------------------------ identity
def test_identity_follows_the_files_content(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "posts.jsonl", _posts(10))
    args = DataArguments(train_file=str(path))
    first = source_identity(args)
    assert first["source"] == "posts.jsonl" and first["files"]
    assert source_identity(args) == first
    _write_jsonl(path, _posts(11))
    assert source_identity(args)["files"] != first["files"]
    assert source_identity(DataArguments(train_file=str(path), validation_split_percentage=20)) != source_identity(
        args)
    # the synthetic benchmark's identity is what it was before these options existed
    synthetic = source_identity(DataArguments())
    assert "dataset_name" not in synthetic["options"] and synthetic["options"]["synthetic_seed"] == 0


# ------------------------------------------------------------------------------------------ the README examples
def _run_info(out: Path) -> dict[str, Any]:
    return json.loads((out / "mmoe_run.json").read_text(encoding="utf-8"))


def test_readme_csv_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bert_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "train.csv", _claims(40))
    _write_csv(tmp_path / "dev.csv", _claims(16, seed=1))
    argv = _readme_command("**CSV files**")
    assert argv[:6] == ["--train_file", "train.csv", "--validation_file", "dev.csv", "--text_template",
                        "{claim} | {evidence}"]
    results = train([*_substitute(argv, str(tiny_bert_dir)), *SPEED])
    assert results["split"] == "validation"
    info = _run_info(tmp_path / "outputs" / "claims")
    assert info["dataset"] == "train.csv"
    assert "train.csv" in (tmp_path / "outputs" / "claims" / "README.md").read_text(encoding="utf-8")


def test_readme_image_folder_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    colors = [(200, 30, 30), (30, 30, 200)]
    for split, n in (("train", 40), ("validation", 12)):
        folder = tmp_path / "photos" / split
        rows = []
        for i in range(n):
            label = i % 2
            _write_image(folder / f"{i}.png", colors[label])
            rows.append({"file_name": f"{i}.png", "text": ["a cold day", "a warm day"][label], "label": label,
                         "text_prediction": label, "vision_prediction": label if i % 4 < 3 else 1 - label})
        _write_csv(folder / "metadata.csv", rows)
    argv = _readme_command("**A folder of images with a `metadata.csv`**")
    assert argv[:2] == ["--dataset_name", "./photos"]
    loaded = load_source(cli.parse_arguments(argv)[1])
    assert (len(loaded["train"]), len(loaded["validation"])) == (40, 12)
    assert {"image", "text", "label", "text_prediction", "vision_prediction"} <= set(loaded["train"].column_names)
    results = train([*_substitute(argv, "tiny-vilt"), *SPEED])
    assert results["split"] == "validation"
    assert _run_info(tmp_path / "outputs" / "photos")["dataset"] == "photos"


def test_readme_jsonl_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bert_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "posts.jsonl", _posts(40))
    argv = _readme_command("**JSON lines without a validation split**")
    assert argv[:4] == ["--train_file", "posts.jsonl", "--validation_split_percentage", "20"]
    loaded = load_source(cli.parse_arguments(argv)[1])
    assert (len(loaded["train"]), len(loaded["validation"])) == (32, 8)
    train([*_substitute(argv, str(tiny_bert_dir)), *SPEED])
    info = _run_info(tmp_path / "outputs" / "posts")
    assert info["dataset"] == "posts.jsonl" and not Path(info["dataset"]).is_absolute()
