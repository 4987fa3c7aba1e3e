"""Every user error of ``mmoe-train`` exits with status 2 and one ``mmoe-train: error: <problem>`` line per problem,
with no traceback, before the first stage; from Python the same checks raise ``ArgumentsError`` (issue 23, items 5
and 8).

Each test drives ``main([...])`` (or ``MMoETrainer`` directly) with a trainer whose ``train`` fails the test, so a
refusal that comes only after training started is caught.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Value, load_from_disk
from PIL import Image
from test_pipeline import _precomputed_dataset, _tiny_args

from mmoe.training import validation
from mmoe.training.arguments import DataArguments, MMoETrainingArguments
from mmoe.training.cli import main, parse_arguments, train
from mmoe.training.pipeline_data import encode_string_labels, num_labels_of, validate_dataset
from mmoe.training.records import mark_stage_done, stage_is_done
from mmoe.training.sources import load_source
from mmoe.training.trainer import MMoETrainer
from mmoe.training.validation import ArgumentsError, check_arguments

MUSTARD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mustard"


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Running the stages fails the test: every refusal here must come before them."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("training started although the input is invalid")

    monkeypatch.setattr(MMoETrainer, "train", refuse)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _precomputed_dataset(tmp_path_factory.mktemp("data") / "data")


def _user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run ``mmoe-train argv``; assert exit status 2 and no traceback; return the ``mmoe-train: error:`` lines."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mmoe-train: error: ")]
    assert lines, err
    return [line.removeprefix("mmoe-train: error: ") for line in lines]


def _save(dataset: DatasetDict, folder: Path) -> Path:
    dataset.save_to_disk(str(folder))
    return folder


# ------------------------------------------------------------------------------------------- item 1: dataset checks
def test_dataset_checks_are_user_errors_with_one_line_per_problem(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    floats = _save(load_from_disk(str(data)).cast_column("label", Value("float32")), tmp_path / "floats")
    lines = _user_error(_tiny_args(tiny_bert_dir, floats, tmp_path / "out"), capsys)
    assert len(lines) == 3  # one per split
    assert all("labels must be integer class indices, got floats" in line for line in lines)
    assert [line.split(":")[0] for line in lines] == [f"Column 'label' of split {split!r}"
                                                      for split in ("train", "validation", "test")]

    missing_column = _save(load_from_disk(str(data)).remove_columns("caption"), tmp_path / "no-caption")
    (line,) = _user_error(_tiny_args(tiny_bert_dir, missing_column, tmp_path / "out"), capsys)
    assert line.startswith("Split 'train' lacks column(s) ['caption']")

    ints = load_from_disk(str(data)).cast_column("label", Value("int64"))
    ints["train"] = ints["train"].map(lambda row: {"label": 5 if row["label"] == 1 else 0})
    (line,) = _user_error(_tiny_args(tiny_bert_dir, _save(ints, tmp_path / "gap"), tmp_path / "out"), capsys)
    assert "holds the classes [0, 5]" in line
    assert not (tmp_path / "out" / "categorize").exists()


def test_dataset_checks_raise_arguments_error_a_value_error() -> None:
    dataset = DatasetDict({"train": Dataset.from_dict({"label": [0, 1, 5]}),
                           "validation": Dataset.from_dict({"label": [0, 1]})})
    with pytest.raises(ArgumentsError, match=r"holds the classes \[0, 1, 5\]") as info:
        num_labels_of(dataset, "label")
    assert isinstance(info.value, ValueError)
    strings = DatasetDict({"train": Dataset.from_dict({"label": ["a", "b"]}),
                           "validation": Dataset.from_dict({"label": ["a", "c"]})})
    with pytest.raises(ArgumentsError, match="class 'c' appears in validation but never in train"):
        encode_string_labels(strings, "label")
    args = MMoETrainingArguments(output_dir="unused", text_template="{text}")
    with pytest.raises(ArgumentsError, match=r"lacks column\(s\) \['text'\]"):
        validate_dataset(dataset, args, "{text}", 6)


def test_load_source_refuses_with_arguments_error(data: Path, tmp_path: Path) -> None:
    only_train = _save(DatasetDict({"train": load_from_disk(str(data))["train"]}), tmp_path / "only-train")
    with pytest.raises(ArgumentsError, match="The dataset needs a 'validation' split"):
        load_source(DataArguments(dataset=str(only_train)))
    load_from_disk(str(data))["train"].save_to_disk(str(tmp_path / "one-split"))
    with pytest.raises(ArgumentsError, match="expected a DatasetDict folder"):
        load_source(DataArguments(dataset=str(tmp_path / "one-split")))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    with pytest.raises(ArgumentsError, match="cannot be loaded with datasets.load_from_disk"):
        load_source(DataArguments(dataset=str(tmp_path / "broken")))


def test_malformed_mustard_file_is_named_with_status_2(
    tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (MUSTARD_DIR / "mustard_train.json").is_file():
        pytest.skip(f"MUStARD test data not found at {MUSTARD_DIR}.")
    folder = tmp_path / "mustard"
    shutil.copytree(MUSTARD_DIR, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    text = (folder / "mustard_train.json").read_text(encoding="utf-8")
    (folder / "mustard_train.json").write_text(text[: len(text) // 2], encoding="utf-8")
    (line,) = _user_error(["--dataset", "mustard", "--data_dir", str(folder), "--backbone", str(tiny_bert_dir),
                           "--output_dir", str(tmp_path / "out"), "--max_steps", "1"], capsys)
    assert "mustard_train.json" in line
    (folder / "mustard_train.json").write_text("[1, 2]", encoding="utf-8")
    (line,) = _user_error(["--dataset", "mustard", "--data_dir", str(folder), "--backbone", str(tiny_bert_dir),
                           "--output_dir", str(tmp_path / "out"), "--max_steps", "1"], capsys)
    assert "mustard_train.json" in line and "holds a JSON list" in line


# ------------------------------------------------------------------------------------------- item 2: unknown flags
def test_unknown_flag_is_refused_with_the_closest_known_flag(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (line,) = _user_error([*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), "--lora_rr", "8"], capsys)
    assert line == "unrecognized arguments: --lora_rr 8 (did you mean --lora_r?)"
    (line,) = _user_error([*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), "--no_such_thing_at_all"], capsys)
    assert line == "unrecognized arguments: --no_such_thing_at_all"
    with pytest.raises(ArgumentsError, match="unrecognized arguments: --lora_rr"):
        parse_arguments(["--lora_rr", "8"])


def test_argparse_errors_are_named_mmoe_train(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--pooling", "nonsense"])
    assert exit_info.value.code == 2
    assert "mmoe-train: error: argument --pooling" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- item 3: empty splits
def test_empty_split_is_refused_by_name(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    full = load_from_disk(str(data))
    empty = _save(DatasetDict({"train": full["train"], "validation": full["validation"].select([])}),
                  tmp_path / "empty")
    (line,) = _user_error(_tiny_args(tiny_bert_dir, empty, tmp_path / "out"), capsys)
    assert line.startswith(f"Split 'validation' of --dataset {empty} is empty (0 rows)")
    # the Python API refuses it too
    args = MMoETrainingArguments(output_dir=str(tmp_path / "out"), text_template="{caption} | {text}")
    with pytest.raises(ArgumentsError, match=r"Split 'test' \(test_dataset\) is empty"):
        MMoETrainer(str(tiny_bert_dir), args, train_dataset=full["train"], eval_dataset=full["validation"],
                    test_dataset=full["test"].select([]))


# ------------------------------------------------------------------------------------------- item 4: truncated weights
def test_truncated_weights_file_means_the_stage_is_redone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch
    from safetensors.torch import save_file

    stage_dir = tmp_path / "baseline"
    stage_dir.mkdir()
    save_file({"weight": torch.ones(64, 64)}, str(stage_dir / "baseline.safetensors"))
    inputs = {"stage": "baseline", "x": 1}
    mark_stage_done(stage_dir, inputs, {"epochs": 1})
    assert stage_is_done(stage_dir, inputs, False, required=("baseline.safetensors",))
    blob = (stage_dir / "baseline.safetensors").read_bytes()
    (stage_dir / "baseline.safetensors").write_bytes(blob[: len(blob) // 2])
    with caplog.at_level(logging.WARNING, logger="mmoe"):
        assert not stage_is_done(stage_dir, inputs, False, required=("baseline.safetensors",))
    assert str(stage_dir / "baseline.safetensors") in caplog.text and "redoing the stage" in caplog.text


def test_rerun_after_a_truncated_stage_file_redoes_that_stage(data: Path, tmp_path: Path, tiny_bert_dir: Path) -> None:
    out = tmp_path / "out"
    argv = _tiny_args(tiny_bert_dir, data, out, "--max_steps", "1")
    train(argv)
    weights = out / "baseline" / "baseline.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    results = train(argv)  # before the fix: SafetensorError on every rerun
    assert "mmoe" in results
    assert weights.stat().st_size == len(blob)


# ------------------------------------------------------------------------------------------- item 5: precision
def test_bf16_over_a_float16_backbone_on_the_cpu_is_refused(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (line,) = _user_error([*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), "--bf16", "--use_cpu",
                           "--backbone_dtype", "float16"], capsys)
    assert line.startswith("--bf16 with --backbone_dtype float16 cannot train on the CPU")
    assert "--backbone_dtype bfloat16 --bf16" in line
    # what works on the CPU is accepted
    for flags in (["--bf16", "--use_cpu", "--backbone_dtype", "bfloat16"], ["--bf16", "--use_cpu"],
                  ["--backbone_dtype", "float16"], ["--fp16", "--use_cpu", "--backbone_dtype", "float16"]):
        check_arguments(*parse_arguments([*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), *flags]))


def test_bf16_without_a_gpu_says_what_to_use(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --bf16 works")
    (line,) = _user_error([*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), "--bf16"], capsys)
    assert line.startswith("--bf16 needs a GPU with bfloat16 support") and "--use_cpu" in line


# ------------------------------------------------------------------------------------------- item 6: late crashes
def _image_dataset(folder: Path, data: Path) -> Path:
    """The precomputed dataset with an ``image`` column of paths: two missing files and one that is not an image
    in train, one broken in-memory image (bytes) in validation."""
    images = folder / "images"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(images / "good.png")
    (images / "broken.png").write_bytes(b"not a png")
    full = load_from_disk(str(data))
    good = str(images / "good.png")

    def paths(n: int, broken: dict[int, str]) -> list[str]:
        return [broken.get(i, good) for i in range(n)]

    full["train"] = full["train"].add_column("image", paths(len(full["train"]), {
        3: str(images / "missing-3.png"), 7: str(images / "broken.png"), 11: str(images / "missing-11.png")}))
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    cells = [{"bytes": buffer.getvalue(), "path": None}] * len(full["validation"])
    cells[5] = {"bytes": b"garbage", "path": None}
    full["validation"] = full["validation"].add_column("image", cells)
    full["test"] = full["test"].add_column("image", paths(len(full["test"]), {}))
    return _save(full, folder / "dataset")


def test_broken_images_are_all_named_before_training(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _image_dataset(tmp_path / "images", data)
    lines = _user_error([*_tiny_args(tiny_bert_dir, dataset, tmp_path / "out"), "--image_column", "image"], capsys)
    assert len(lines) == 4, lines
    assert [line.split(":")[0] for line in lines] == ["--image_column 'image', split 'train'"] * 3 + [
        "--image_column 'image', split 'validation'"]
    assert "row 3" in lines[0] and "missing-3.png" in lines[0] and "file not found" in lines[0]
    assert "row 7" in lines[1] and "broken.png" in lines[1]
    assert "row 11" in lines[2] and "row 5" in lines[3]
    assert not (tmp_path / "out" / "categorize").exists()


def test_num_labels_against_the_data(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a ClassLabel with 2 names and --num_labels 3: refused before the unimodal classifiers train
    (line,) = _user_error([*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), "--num_labels", "3"], capsys)
    assert line.startswith("--num_labels 3 contradicts column 'label', a ClassLabel with 2 classes ['no', 'yes']")
    # plain integer labels: accepted as transformers' configs accept it, with a warning about the untrained class
    ints = DatasetDict({"train": Dataset.from_dict({"label": [0, 1, 0, 1]}),
                        "validation": Dataset.from_dict({"label": [0, 1]})})
    with caplog.at_level(logging.WARNING, logger="mmoe"):
        assert num_labels_of(ints, "label", 3) == 3
    assert "class(es) [2] never occur in the training split" in caplog.text


def test_push_to_hub_offline_or_unreachable_is_refused_before_training(
    data: Path, tmp_path: Path, tiny_bert_dir: Path, no_training: None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [*_tiny_args(tiny_bert_dir, data, tmp_path / "out"), "--push_to_hub", "--hub_model_id", "org/name"]
    calls: list[str] = []

    def whoami(self: Any, *_: Any, **__: Any) -> dict[str, str]:
        calls.append("whoami")
        raise ConnectionError("the network is unreachable")

    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(HfApi, "whoami", whoami)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (line,) = _user_error(argv, capsys)
    assert line.startswith("--push_to_hub: HF_HUB_OFFLINE is set") and "mmoe-card" in line
    assert calls == []  # refused at once, without trying the network

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (line,) = _user_error(argv, capsys)
    assert line.startswith("--push_to_hub: cannot reach the Hub or log in to it (ConnectionError: the network is")
    assert calls == ["whoami"]

    def slow(self: Any, *_: Any, **__: Any) -> dict[str, str]:
        import time

        time.sleep(5)
        return {"name": "someone"}

    monkeypatch.setattr(HfApi, "whoami", slow)
    monkeypatch.setattr(validation, "HUB_CHECK_TIMEOUT", 0.2)
    (line,) = _user_error(argv, capsys)
    assert line.startswith("--push_to_hub: the Hub did not answer within 0.2 s")

    monkeypatch.setattr(HfApi, "whoami", lambda self, *_, **__: {"name": "someone"})
    with pytest.raises(AssertionError, match="training started"):  # reachable: the checks pass, training starts
        main(argv)


# ------------------------------------------------------------------------------------------- item 7: the Python API
def test_python_api_raises_the_same_errors_without_exiting(data: Path, tmp_path: Path, tiny_bert_dir: Path) -> None:
    full = load_from_disk(str(data))
    args = MMoETrainingArguments(output_dir=str(tmp_path / "out"), text_template="{caption} | {text}", num_labels=3)
    with pytest.raises(ArgumentsError, match="--num_labels 3 contradicts column 'label'"):
        MMoETrainer(str(tiny_bert_dir), args, train_dataset=full["train"], eval_dataset=full["validation"])
    floats = full.cast_column("label", Value("float64"))
    args = MMoETrainingArguments(output_dir=str(tmp_path / "out"), text_template="{caption} | {text}")
    with pytest.raises(ArgumentsError) as info:
        MMoETrainer(str(tiny_bert_dir), args, train_dataset=floats["train"], eval_dataset=floats["validation"])
    assert len(info.value.problems) == 2 and "got floats" in info.value.problems[0]
    assert not (tmp_path / "out").exists()


def test_a_dataset_object_as_dataset_option_points_to_mmoe_trainer(data: Path) -> None:
    message = ("--dataset takes a name or folder; to train on an in-memory DatasetDict use "
               "MMoETrainer(train_dataset=ds['train'], eval_dataset=ds['validation'])")
    with pytest.raises(ArgumentsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        DataArguments(dataset=load_from_disk(str(data)))


def test_every_problem_gets_its_own_error_line(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _user_error(["--backbone", "tiny-bert", "--output_dir", str(tmp_path), "--lora_r", "0",
                         "--lora_dropout", "2"], capsys)
    assert len(lines) == 2
    assert lines[0].startswith("--lora_r must be > 0") and lines[1].startswith("--lora_dropout must be in [0, 1)")


def test_options_the_method_never_reads_are_named_and_left_off_the_card():
    """An option of a stage the method does not run is warned about (one line each) and never listed on the card."""
    from mmoe.training.arguments import options_without_effect, recipe_options
    from mmoe.training.cli import parse_arguments

    model_args, _, args = parse_arguments(["--reweighting", "global", "--router_learning_rate", "0.01"])
    notes = options_without_effect(model_args, args)
    assert len(notes) == 1 and notes[0].startswith("--reweighting has no effect with --method mmoe")
    assert "reweighting" not in recipe_options(model_args, "mmoe")
    assert recipe_options(args, "mmoe")["router_learning_rate"] == 0.01

    model_args, _, args = parse_arguments(["--method", "i2moe", "--router_learning_rate", "0.01", "--lora_r", "8"])
    notes = options_without_effect(model_args, args)
    assert [note.split()[0] for note in notes] == ["--router_learning_rate"]
    assert "router_learning_rate" not in recipe_options(args, "i2moe")
    assert not {"router_input", "router_objective"} & set(recipe_options(model_args, "i2moe"))
    assert recipe_options(model_args, "i2moe")["lora_r"] == 8


def test_a_diverging_run_stops_with_one_line_and_saves_no_model(tmp_path, tiny_bert_dir, capsys):
    """A learning rate of 1e30 makes the baseline's loss non-finite: the run stops in that stage with exit 2 and one
    error line naming it, and no model, report or stage record is written as a result."""
    from test_pipeline import _precomputed_dataset, _tiny_args

    from mmoe.training.cli import main

    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(_tiny_args(tiny_bert_dir, data, out, "--learning_rate", "1e30", "--router_learning_rate", "1e30",
                        "--num_train_epochs", "2"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mmoe-train: error:")]
    assert len(lines) == 1 and "baseline" in lines[0] and "Traceback" not in err
    assert not (out / "baseline" / "baseline.safetensors").exists()
    assert not (out / "baseline" / "stage_complete.json").exists()
    assert not (out / "model.safetensors").exists() and not (out / "eval_results.json").exists()


def test_seed_beside_seeds_and_fp16_on_the_cpu_are_named(monkeypatch):
    from mmoe.training.arguments import options_without_effect, recipe_options
    from mmoe.training.cli import parse_arguments

    model_args, _, args = parse_arguments(["--seeds", "3", "4", "--seed", "9"])
    assert any(note.startswith("--seed 9 has no effect with --seeds 3 4") for note in options_without_effect(
        model_args, args))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    model_args, _, args = parse_arguments(["--fp16", "true", "--use_cpu", "true"])
    assert any(note.startswith("--fp16 has no effect on the CPU") for note in options_without_effect(model_args, args))
    assert "fp16" not in recipe_options(args, "mmoe")
