"""Fail well: every option is checked before training, labels at the data boundary, uploads by one allowlist.

Most tests here are pure argument/data checks (milliseconds); one tiny end-to-end run (a config file plus override
flags, string labels) checks that what the pipeline writes is published and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from mmoe.hub_cards.cli import main as card_main
from mmoe.hub_cards.publish import UPLOAD_ALLOWLIST, files_to_upload, push_output_dir, remote_code_files
from mmoe.training import cli, validation
from mmoe.training.arguments import DEFAULT_BACKBONE, DataArguments, MMoETrainingArguments, ModelArguments
from mmoe.training.cli import main, parse_arguments, train
from mmoe.training.pipeline_data import encode_string_labels, num_labels_of, validate_dataset
from mmoe.training.validation import ArgumentsError, backbone_problem, check_arguments

S = [
    "--preset", "demo", "--backbone", "tiny-bert", "--synthetic_num_train", "64", "--synthetic_num_validation", "32",
    "--synthetic_num_test", "32", "--max_steps", "2",
]
REPO_ID = "org/name"


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the data or running the trainer fails the test: refusals must come before both."""
    from mmoe.training import sources
    from mmoe.training.trainer import MMoETrainer

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the data was loaded or the trainer ran although the options are invalid")

    monkeypatch.setattr(sources, "load_source", refuse)
    monkeypatch.setattr(MMoETrainer, "train", refuse)


def _refused(argv: list[str], match: str) -> ArgumentsError:
    with pytest.raises(ArgumentsError, match=match) as info:
        train(argv)
    return info.value


# ------------------------------------------------------------------------------------------ --output_dir
def test_output_dir_that_is_a_file_is_refused_and_left_untouched(tmp_path: Path, no_training: None) -> None:
    target = tmp_path / "results.txt"
    target.write_text("precious")
    _refused([*S, "--output_dir", str(target)], r"--output_dir .*results\.txt is an existing file")
    assert target.read_text() == "precious"
    _refused([*S, "--output_dir", str(target / "run")], r"--output_dir .* cannot be created: .*results\.txt is a file")
    assert target.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_read_only_output_dir_is_refused(tmp_path: Path, no_training: None, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "keep.txt").write_text("old run")
    real_access = os.access
    monkeypatch.setattr(validation.os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    _refused([*S, "--output_dir", str(folder)], r"--output_dir .*read-only is not writable")
    _refused([*S, "--output_dir", str(folder / "new")], r"--output_dir .*new cannot be created: .* not writable")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and (folder / "keep.txt").read_text() == "old run"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_refused_for_real(tmp_path: Path, no_training: None) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        _refused([*S, "--output_dir", str(folder)], "--output_dir .* not writable")
    finally:
        folder.chmod(0o755)


def test_fresh_output_dir_is_accepted_and_not_created_by_the_check(tmp_path: Path) -> None:
    model_args, data_args, training_args = parse_arguments([*S, "--output_dir", str(tmp_path / "a" / "b")])
    check_arguments(model_args, data_args, training_args)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------ Hub options
def test_push_to_hub_without_hub_model_id_is_refused_before_training(tmp_path: Path, no_training: None) -> None:
    out = tmp_path / "out"
    _refused([*S, "--output_dir", str(out), "--push_to_hub"], "--push_to_hub needs --hub_model_id")
    _refused([*S, "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "not a/valid/id"],
             "--hub_model_id 'not a/valid/id' is not a valid Hub repository id")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ number ranges
RANGE_CASES = [
    (["--lora_r", "0"], "--lora_r must be > 0"),
    (["--lora_alpha", "0"], "--lora_alpha must be > 0"),
    (["--lora_dropout", "1"], r"--lora_dropout must be in \[0, 1\)"),
    (["--lora_dropout", "-0.1"], r"--lora_dropout must be in \[0, 1\)"),
    (["--router_dropout", "1.0"], r"--router_dropout must be in \[0, 1\)"),
    (["--router_focal_gamma", "-1"], "--router_focal_gamma must be >= 0"),
    (["--router_focal_alpha", "0"], "--router_focal_alpha must be > 0"),
    (["--router_hidden_size", "-1"], "--router_hidden_size must be >= 0"),
    (["--max_length", "0"], "--max_length must be > 0"),
    (["--num_folds", "1"], "--num_folds must be >= 2"),
    (["--unimodal_num_train_epochs", "0"], "--unimodal_num_train_epochs must be > 0"),
    (["--min_confidence", "1.5"], r"--min_confidence must be in \[0, 1\]"),
    (["--min_confidence", "-0.1"], r"--min_confidence must be in \[0, 1\]"),
    (["--min_minority_fraction", "0"], r"--min_minority_fraction must be in \(0, 0.5\]"),
    (["--min_minority_fraction", "0.6"], r"--min_minority_fraction must be in \(0, 0.5\]"),
    (["--synthetic_num_train", "0"], "--synthetic_num_train must be > 0"),
    (["--synthetic_num_validation", "0"], "--synthetic_num_validation must be > 0"),
    (["--synthetic_num_test", "-1"], "--synthetic_num_test must be > 0"),
    (["--synthetic_label_noise", "0.5"], r"--synthetic_label_noise must be in \[0, 0.5\)"),
    (["--synthetic_seed", "-1"], "--synthetic_seed must be in"),
    (["--max_train_samples", "0"], "--max_train_samples must be >= 1"),
    (["--max_eval_samples", "0"], "--max_eval_samples must be >= 1"),
    (["--num_labels", "1"], "--num_labels must be >= 2"),
    (["--min_expert_examples", "-1"], "--min_expert_examples must be >= 0"),
    (["--router_learning_rate", "0"], "--router_learning_rate must be > 0"),
    (["--learning_rate", "0"], "--learning_rate must be > 0"),
    (["--learning_rate", "nan"], "--learning_rate must be a number"),
    (["--seed", "-1"], "--seed must be in"),
    (["--seeds", "0", "-2"], "--seeds must be in"),
    (["--seeds", "1", "1"], "--seeds lists a seed twice"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be >= 1"),
    (["--baseline_num_train_epochs", "0"], "--baseline_num_train_epochs must be > 0"),
    (["--expert_num_train_epochs", "-1"], "--expert_num_train_epochs must be > 0"),
    (["--router_num_train_epochs", "0"], "--router_num_train_epochs must be > 0"),
]


@pytest.mark.parametrize(("flags", "message"), RANGE_CASES, ids=[" ".join(f) for f, _ in RANGE_CASES])
def test_out_of_range_options_are_refused_before_training(
    flags: list[str], message: str, tmp_path: Path, no_training: None
) -> None:
    out = tmp_path / "out"
    _refused([*S, "--output_dir", str(out), *flags], message)
    assert not out.exists()


# Options with a fixed set of values are argparse choices (listed by --help): the parser refuses an unknown value
# with status 2 before anything else runs; built in Python, the dataclasses refuse it with mmoe's own message.
CHOICE_CASES = [
    (["--pooling", "max"], lambda: ModelArguments(pooling="max"), "--pooling must be one of auto, first, last, mean"),
    (["--unimodal_source", "magic"], lambda: MMoETrainingArguments(output_dir="unused", unimodal_source="magic"),
     "--unimodal_source must be one of auto, precomputed, trained"),
]


@pytest.mark.parametrize(("flags", "build", "message"), CHOICE_CASES, ids=[" ".join(f) for f, _, _ in CHOICE_CASES])
def test_unknown_choices_are_refused_before_training(
    flags: list[str], build: Any, message: str, tmp_path: Path, no_training: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        train([*S, "--output_dir", str(out), *flags])
    assert exit_info.value.code == 2
    assert re.search(rf"argument {flags[0]}(/\S+)?: invalid choice: {flags[1]!r}", capsys.readouterr().err)
    assert not out.exists()
    with pytest.raises(ArgumentsError, match=message):
        build()


def test_nothing_to_train_is_refused(tmp_path: Path, no_training: None) -> None:
    error = _refused([*S, "--output_dir", str(tmp_path), "--max_steps", "-1", "--num_train_epochs", "-1"],
                     "Nothing would be trained")
    assert "--num_train_epochs" in str(error) and "--max_steps" in str(error)
    _refused([*S, "--output_dir", str(tmp_path), "--max_steps", "0", "--num_train_epochs", "0"], "Nothing would")
    # every stage has its own positive epochs: training happens without --num_train_epochs
    args = parse_arguments([*S, "--max_steps", "-1", "--num_train_epochs", "0", "--baseline_num_train_epochs", "1",
                            "--expert_num_train_epochs", "1", "--router_num_train_epochs", "1"])
    check_arguments(*args)
    # ...and only the stages of the method count: I2MoE trains the baseline and the i2moe stage
    args = parse_arguments([*S, "--max_steps", "-1", "--num_train_epochs", "0", "--method", "i2moe",
                            "--baseline_num_train_epochs", "1", "--i2moe_num_train_epochs", "1"])
    check_arguments(*args)
    # (without the demo preset, which sets the experts' and the router's epochs)
    error = _refused(["--backbone", "tiny-bert", "--output_dir", str(tmp_path), "--max_steps", "-1",
                      "--num_train_epochs", "0", "--baseline_num_train_epochs", "1", "--i2moe_num_train_epochs", "1"],
                     "Nothing would")
    assert "--expert_num_train_epochs" in str(error) and "--router_num_train_epochs" in str(error)


def test_every_problem_is_reported_at_once_and_main_exits_with_status_2(
    tmp_path: Path, no_training: None, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _refused([*S, "--output_dir", str(tmp_path), "--learning_rate", "0", "--seed", "-1", "--push_to_hub"],
                     "3 problems")
    assert len(error.problems) == 3 and isinstance(error, ValueError)
    with pytest.raises(SystemExit) as exit_info:
        main([*S, "--output_dir", str(tmp_path), "--lora_r", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "mmoe-train: error: --lora_r must be > 0" in err and "Traceback" not in err


def test_dataclasses_check_their_ranges_when_built() -> None:
    with pytest.raises(ValueError, match="--lora_r must be > 0"):
        ModelArguments(lora_r=0)
    with pytest.raises(ValueError, match="--max_train_samples must be >= 1"):
        DataArguments(max_train_samples=0)
    assert DataArguments(max_train_samples=1).max_train_samples == 1
    # the categorization's options live on the recipe now, and check their ranges there (bounds included)
    with pytest.raises(ValueError, match=r"--min_confidence must be in \[0, 1\]"):
        MMoETrainingArguments(output_dir="unused", min_confidence=1.5)
    with pytest.raises(ValueError, match=r"--min_minority_fraction must be in \(0, 0.5\]"):
        MMoETrainingArguments(output_dir="unused", min_minority_fraction=0.0)
    args = MMoETrainingArguments(output_dir="unused", min_confidence=0.0, min_minority_fraction=0.5)
    assert (args.min_confidence, args.min_minority_fraction) == (0.0, 0.5)


# ------------------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize("value", ["./missing/model", "/nonexistent/bert", "~/models/bert", "runs/2024/backbone"])
@pytest.mark.parametrize("option", ["--backbone", "--unimodal_backbone"])
def test_missing_backbone_folder_fails_now_not_after_a_hub_timeout(
    value: str, option: str, tmp_path: Path, no_training: None
) -> None:
    error = _refused([*S, "--output_dir", str(tmp_path), option, value], "backbone folder not found")
    assert value in str(error) and f"({option})" in str(error)


def test_backbone_values_that_are_accepted_or_refused(tmp_path: Path, tiny_bert_dir: Path) -> None:
    for value in ("tiny-bert", "tiny-qwen2", "tiny-vilt", "tiny-llava", DEFAULT_BACKBONE, "org/model",
                  "bert-base-uncased", str(tiny_bert_dir)):
        assert backbone_problem("backbone", value) is None, value
    (tmp_path / "weights.bin").write_bytes(b"")
    assert "is a file" in backbone_problem("backbone", str(tmp_path / "weights.bin"))
    assert "has no config.json" in backbone_problem("backbone", str(tmp_path))
    assert "valid Hub id" in backbone_problem("backbone", "my model")


def test_offline_hub_id_missing_from_the_cache_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE" in backbone_problem("backbone", "someone/never-downloaded-model")


def test_every_tiny_backbone_name_the_validation_accepts_is_built_by_the_pipeline(tmp_path: Path) -> None:
    from mmoe.training.backbones import resolve_backbone

    for name in validation.TINY_BACKBONES:
        folder = Path(resolve_backbone(name, tmp_path))
        assert folder == tmp_path / "tiny-backbones" / name and (folder / "config.json").is_file(), name


# ------------------------------------------------------------------------------------------ --dataset / --data_dir
def test_dataset_and_data_dir_are_checked_up_front(tmp_path: Path, no_training: None) -> None:
    out = ["--output_dir", str(tmp_path / "out")]
    _refused([*S, *out, "--dataset", "mustard"], "--dataset mustard needs --data_dir")
    _refused([*S, *out, "--dataset", "mustard", "--data_dir", str(tmp_path / "nope")],
             r"--data_dir .*nope is not an existing folder")
    (tmp_path / "mustard").mkdir()
    (tmp_path / "mustard" / "mustard_train.json").write_text("{}")
    error = _refused([*S, *out, "--dataset", "mustard", "--data_dir", str(tmp_path / "mustard")], "lacks the MUStARD")
    assert "mustard_validation.json" in str(error) and "mustard_train.json" not in str(error)
    _refused([*S, *out, "--dataset", str(tmp_path / "nowhere")], "neither 'synthetic', 'mustard' nor an existing")
    _refused([*S, *out, "--dataset", str(tmp_path / "mustard")], "without dataset_dict.json")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ config files
def test_config_file_then_override_flags(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "preset: demo\nbackbone: tiny-bert\nlora_r: 8\nlora_alpha: 8\nseeds: [0, 1]\nlearning_rate: 5e-4\n"
        "disable_tqdm: true\nnum_labels: null\ntext_template: '- {text}'\nreport_to: [none]\n"
        "lr_scheduler_kwargs: {min_lr: 0.0001}\n"
    )
    model_args, data_args, training_args = parse_arguments([str(config), "--lora_r", "4", "--seeds", "2"])
    assert model_args.lora_r == 4 and model_args.lora_alpha == 8 and model_args.backbone == "tiny-bert"  # flag wins
    assert training_args.seeds == [2] and training_args.learning_rate == 5e-4 and training_args.disable_tqdm
    assert training_args.num_labels is None and training_args.text_template == "- {text}"
    assert training_args.report_to == [] and training_args.lr_scheduler_kwargs == {"min_lr": 0.0001}
    assert data_args.synthetic_num_train == 1200 and training_args.output_dir == "outputs/mmoe-demo"  # the preset
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"lora_r": 2, "max_steps": 3, "push_to_hub": False}))
    model_args, _, training_args = parse_arguments([str(as_json), "--max_steps", "5"])
    assert model_args.lora_r == 2 and training_args.max_steps == 5 and not training_args.push_to_hub


def test_bad_config_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArgumentsError, match="config file not found"):
        parse_arguments([str(tmp_path / "missing.yaml"), "--lora_r", "4"])
    config = tmp_path / "typo.yaml"
    config.write_text("lora_rank: 8\nlora_r: 4\n")
    with pytest.raises(ArgumentsError, match=r"unknown option\(s\) \['lora_rank'\]"):
        parse_arguments([str(config)])
    config.write_text("- just\n- a list\n")
    with pytest.raises(ArgumentsError, match="mapping"):
        parse_arguments([str(config)])


# ------------------------------------------------------------------------------------------ labels
def _splits(train: list, validation: list | None = None, feature: Any = None, **extra: list) -> DatasetDict:
    def make(labels: list) -> Dataset:
        columns = {"text": [f"row {i}" for i in range(len(labels))], "label": labels}
        features = Features({"text": Value("string"), "label": feature}) if feature is not None else None
        return Dataset.from_dict(columns, features=features)

    splits = {"train": make(train), "validation": make(validation if validation is not None else train)}
    splits.update({name: make(labels) for name, labels in extra.items()})
    return DatasetDict(splits)


ARGS = MMoETrainingArguments(output_dir="unused", report_to="none", text_template="{text}")
TEMPLATE = "{text}"


def test_gaps_in_inferred_labels_are_refused_not_a_bigger_model() -> None:
    dataset = _splits([0, 1, 5, 0, 1], [0, 1])
    with pytest.raises(ValueError, match=r"'label' of split 'train' holds the classes \[0, 1, 5\]") as info:
        num_labels_of(dataset, "label")
    assert "[2, 3, 4] never occur" in str(info.value) and "--num_labels" in str(info.value)
    assert num_labels_of(dataset, "label", declared=6) == 6  # declared: the gap is intended
    validate_dataset(dataset, ARGS, TEMPLATE, 6)
    with pytest.raises(ValueError, match=r"\[-1\] are negative"):
        num_labels_of(_splits([-1, 0, 1]), "label")
    with pytest.raises(ValueError, match="single class"):
        num_labels_of(_splits([0, 0]), "label")


def test_a_class_missing_from_training_is_refused() -> None:
    dataset = _splits([0, 1, 0, 1], [0, 1, 5], test=[0, 1, 2])
    assert num_labels_of(dataset, "label") == 2
    with pytest.raises(ValueError, match="class 5 appears in validation but never in train") as info:
        validate_dataset(dataset, ARGS, TEMPLATE, 2)
    assert "class 2 appears in test but never in train" in str(info.value)
    assert "labels [5] are outside 0..1" in str(info.value)
    # within the declared range but unseen in training: still refused
    with pytest.raises(ValueError, match="class 2 appears in validation but never in train"):
        validate_dataset(_splits([0, 1], [0, 2], feature=ClassLabel(names=["a", "b", "c"])), ARGS, TEMPLATE, 3)


def test_labels_outside_the_declared_range_name_column_split_and_values() -> None:
    with pytest.raises(ValueError, match=r"Column 'label' of split 'train': labels \[3, 4\] are outside 0..2"):
        validate_dataset(_splits([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]), ARGS, TEMPLATE, 3)


def test_string_labels_are_refused_with_a_hint_and_encoded_when_loading() -> None:
    dataset = _splits(["yes", "no", "yes"], ["no", "yes"])
    with pytest.raises(ValueError, match=r"Column 'label' of split 'train' holds strings \['yes', 'no'\]") as info:
        num_labels_of(dataset, "label")
    assert "dataset.class_encode_column('label')" in str(info.value)
    encoded = encode_string_labels(dataset, "label")
    assert encoded["train"].features["label"].names == ["no", "yes"]
    assert encoded["validation"].features["label"].names == ["no", "yes"]
    assert list(encoded["train"]["label"]) == [1, 0, 1] and list(encoded["validation"]["label"]) == [0, 1]
    assert num_labels_of(encoded, "label") == 2
    with pytest.raises(ValueError, match="class 'maybe' appears in validation but never in train"):
        encode_string_labels(_splits(["yes", "no"], ["maybe", "no"]), "label")
    with pytest.raises(ValueError, match=r"'label' of split 'validation' has 1 row\(s\) out of 2 with no label"):
        encode_string_labels(_splits(["yes", "no"], ["yes", None]), "label")
    ints = _splits([0, 1])
    assert encode_string_labels(ints, "label") is ints


def test_none_float_and_bool_labels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Column 'label' of split 'train' has 2 row\(s\) out of 4 with no label"):
        num_labels_of(_splits([0, None, 1, None], [0, 1]), "label")
    with pytest.raises(ValueError, match="labels must be integer class indices, got floats") as info:
        num_labels_of(_splits([0.0, 1.0], [0.0, 1.0]), "label")
    assert "cast_column('label', Value('int64'))" in str(info.value) and "2 problems" in str(info.value)
    with pytest.raises(ValueError, match="not whole numbers"):
        num_labels_of(_splits([0.5, 1.0], [0, 1]), "label")
    with pytest.raises(ValueError, match=r"holds booleans \[True, False\]"):
        num_labels_of(_splits([True, False], [0, 1]), "label", declared=2)
    with pytest.raises(ValueError, match="holds booleans"):
        validate_dataset(_splits([0, 1], [True, False]), ARGS, TEMPLATE, 2)


def test_labels_are_read_whatever_the_format() -> None:
    dataset = _splits([0, 1, 1], [1, 0]).with_format("torch")
    assert num_labels_of(dataset, "label") == 2
    validate_dataset(dataset, ARGS, TEMPLATE, 2)


# ------------------------------------------------------------------------------------------ upload allowlist
def _publishable(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "mmoe", "backbone_config": {"model_type": "bert"}}))
    (root / "model.safetensors").write_bytes(b"weights")
    (root / "tokenizer.json").write_text("{}")
    (root / "secrets.env").write_text("HF_TOKEN=hf_secret\n")
    (root / "notes.txt").write_text("private notes")
    return root


def _sent(captured_hub: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {op.path_in_repo for op in captured_hub["create_commit"][-1]["operations"]}


def test_push_output_dir_skips_unknown_files_with_a_warning(
    tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    folder = _publishable(tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        push_output_dir(folder, REPO_ID)
    sent = _sent(captured_hub)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= sent
    assert "secrets.env" not in sent and "notes.txt" not in sent
    assert "secrets.env" in caplog.text and "notes.txt" in caplog.text and "Not uploading 2 file(s)" in caplog.text
    assert (folder / "secrets.env").read_text() == "HF_TOKEN=hf_secret\n"  # skipped, not deleted


def test_mmoe_card_push_skips_unknown_files_with_a_warning(
    tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    folder = _publishable(tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        assert card_main(["--output_dir", str(folder), "--push_to_hub", "--hub_model_id", REPO_ID]) == 0
    assert "secrets.env" not in _sent(captured_hub) and "README.md" in _sent(captured_hub)
    assert "secrets.env" in caplog.text
    with pytest.raises(SystemExit):
        card_main(["--output_dir", str(folder), "--push_to_hub", "--hub_model_id", "not a valid id"])
    assert len(captured_hub["create_commit"]) == 1


def test_remote_code_modules_named_by_auto_map_travel(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_mmoe.MMoEConfig", "AutoModel": "modeling_mmoe.MMoEModel"}
    (folder / "config.json").write_text(json.dumps({"auto_map": auto_map}))
    (folder / "configuration_mmoe.py").write_text("X = 1\n")
    (folder / "modeling_mmoe.py").write_text("from .configuration_mmoe import X\nfrom .new_helpers import Y\n")
    (folder / "new_helpers.py").write_text("Y = 2\n")
    (folder / "train_script.py").write_text("print('not part of the model')\n")
    assert remote_code_files(folder) == ["configuration_mmoe.py", "modeling_mmoe.py", "new_helpers.py"]
    with caplog.at_level(logging.WARNING):
        assert files_to_upload(folder) == ["config.json", "configuration_mmoe.py", "modeling_mmoe.py", "new_helpers.py"]
    assert "train_script.py" in caplog.text


def test_the_model_push_companions_are_part_of_the_allowlist() -> None:
    from mmoe import hub_utils

    assert set(hub_utils.COMPANION_FILES) <= set(UPLOAD_ALLOWLIST)


# ------------------------------------------------------------------------------------------ end to end
def _string_label_dataset(folder: Path) -> Path:
    def split(n: int, offset: int) -> Dataset:
        labels = ["no" if (i + offset) % 2 else "yes" for i in range(n)]
        other = {"yes": "no", "no": "yes"}
        return Dataset.from_dict({
            "text": [f"weather report {i}" for i in range(n)],
            "caption": [f"a photo of day {i}" for i in range(n)],
            "label": labels,
            "text_prediction": [label if i % 3 != 2 else other[label] for i, label in enumerate(labels)],
            "vision_prediction": [label if i % 3 == 0 else other[label] for i, label in enumerate(labels)],
            "text_confidence": [0.8] * n,
            "vision_confidence": [0.6] * n,
        })

    DatasetDict({"train": split(24, 0), "validation": split(12, 1), "test": split(12, 0)}).save_to_disk(folder)
    return folder


@pytest.fixture(scope="module")
def config_file_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """``mmoe-train run.yaml --max_steps 2 --output_dir ...`` on string labels with precomputed predictions."""
    root = tmp_path_factory.mktemp("fail-well-run")
    data = _string_label_dataset(root / "data")
    config = root / "run.yaml"
    config.write_text(
        f"backbone: {tiny_bert_dir}\ndataset: {data}\ntext_template: '{{caption}} | {{text}}'\nmax_length: 16\n"
        "lora_r: 2\nrouter_hidden_size: 8\nper_device_train_batch_size: 8\nper_device_eval_batch_size: 32\n"
        "min_expert_examples: 2\nmax_steps: 50\ndisable_tqdm: true\nlogging_steps: 50\n"
    )
    out = root / "out"
    cli.main([str(config), "--max_steps", "2", "--output_dir", str(out)])
    return out


def test_config_file_run_maps_string_labels_and_publishes_exactly_its_files(
    config_file_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = config_file_run
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "no", "1": "yes"}
    run = json.loads((out / "mmoe_run.json").read_text())
    assert run["hyperparameters"]["max_steps"] == 2  # the flag after the config file won
    with caplog.at_level(logging.WARNING):
        published = files_to_upload(out)
    assert "Not uploading" not in caplog.text  # everything the run writes at the root is allowlisted
    assert published == sorted(p.name for p in out.iterdir() if p.is_file())


def test_model_push_to_hub_carries_no_unknown_files(
    config_file_run: Path, tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    import shutil

    from mmoe import MMoEForSequenceClassification

    folder = tmp_path / "copy"
    shutil.copytree(config_file_run, folder, ignore=shutil.ignore_patterns("categorize", "tiny-backbones"))
    (folder / "secrets.env").write_text("HF_TOKEN=hf_secret\n")
    MMoEForSequenceClassification.from_pretrained(folder).push_to_hub(REPO_ID)
    sent = _sent(captured_hub)
    assert "secrets.env" not in sent and {"model.safetensors", "eval_results.json", "README.md"} <= sent
    assert sent == set(files_to_upload(folder))


def test_bad_labels_stop_the_pipeline_before_any_stage(tmp_path: Path, tiny_bert_dir: Path) -> None:
    data = tmp_path / "data"
    rows = {"text": ["a", "b", "c", "d"], "caption": ["w", "x", "y", "z"], "label": [0, 1, 5, 0]}
    DatasetDict({"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(rows)}).save_to_disk(data)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"holds the classes \[0, 1, 5\]"):
        train(["--backbone", str(tiny_bert_dir), "--dataset", str(data), "--output_dir", str(out),
               "--text_template", "{caption} | {text}", "--max_steps", "2"])
    assert not any((out / stage).exists() for stage in ("categorize", "baseline", "experts", "router"))


def test_pushing_a_referenced_layout_sends_the_expert_adapter_folders(
    tmp_path: Path, tiny_bert_dir: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    """A model that references its backbone keeps its experts in peft adapter folders: they must travel."""
    from mmoe import MMoEForSequenceClassification

    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, lora_r=2,
                                                        router_hidden_size=8)
    model.config.backbone_name_or_path, model.config.save_backbone = "my-org/tiny-backbone", False
    folder = tmp_path / "out"
    model.save_pretrained(folder)
    push_output_dir(folder, REPO_ID, update_card=False)
    sent = _sent(captured_hub)
    for expert in model.config.experts:
        assert {f"{expert}/adapter_config.json", f"{expert}/adapter_model.safetensors"} <= sent
    (folder / "synergy" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="synergy/adapter_model.safetensors"):
        push_output_dir(folder, REPO_ID, update_card=False)
