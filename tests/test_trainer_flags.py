"""No ``TrainingArguments`` flag is silently ignored: each is honoured, refused with a reason, or documented as not
applicable (``mmoe.training.validation``'s three tables), and the walk over ``TrainingArguments``' fields fails when
transformers adds one that nobody classified."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import TrainingArguments

from mmoe.training import cli
from mmoe.training.arguments import MMoETrainingArguments
from mmoe.training.stages import common
from mmoe.training.trainer import MMoETrainer
from mmoe.training.trainer_utils import stage_arguments
from mmoe.training.validation import (
    HONOURED_TRAINER_FIELDS,
    NOT_APPLICABLE_TRAINER_FIELDS,
    UNSUPPORTED_TRAINER_FLAGS,
    unsupported_trainer_flag_problems,
)

TRAINER_FIELDS = [spec.name for spec in dataclasses.fields(TrainingArguments)]

REFUSED_VALUES: dict[str, list[str]] = {
    "save_strategy": ["epoch"],
    "save_steps": ["100"],
    "save_total_limit": ["2"],
    "save_only_model": ["true"],
    "save_on_each_node": ["true"],
    "enable_jit_checkpoint": ["true"],
    "resume_from_checkpoint": ["outputs/checkpoint-10"],
    "ignore_data_skip": ["true"],
    "restore_callback_states_from_checkpoint": ["true"],
    "load_best_model_at_end": ["true"],
    "metric_for_best_model": ["accuracy"],
    "greater_is_better": ["false"],
    "eval_strategy": ["steps"],
    "eval_steps": ["50"],
    "label_names": ["labels"],
    "label_smoothing_factor": ["0.1"],
    "prediction_loss_only": ["true"],
    "include_for_metrics": ["inputs"],
    "batch_eval_metrics": ["true"],
    "eval_do_concat_batches": ["false"],
    "hub_strategy": ["end"],
    "hub_always_push": ["true"],
    "hub_revision": ["dev"],
}
"""A value away from the default for every refused flag."""


def test_every_trainer_field_is_classified_exactly_once():
    tables = {
        "HONOURED_TRAINER_FIELDS": set(HONOURED_TRAINER_FIELDS),
        "NOT_APPLICABLE_TRAINER_FIELDS": set(NOT_APPLICABLE_TRAINER_FIELDS),
        "UNSUPPORTED_TRAINER_FLAGS": set(UNSUPPORTED_TRAINER_FLAGS),
    }
    assert len(HONOURED_TRAINER_FIELDS) == len(tables["HONOURED_TRAINER_FIELDS"]), "a field is listed twice"
    unclassified = [name for name in TRAINER_FIELDS if not any(name in table for table in tables.values())]
    assert not unclassified, (
        f"TrainingArguments fields nobody classified: {unclassified}. Add each to HONOURED_TRAINER_FIELDS, "
        "UNSUPPORTED_TRAINER_FLAGS or NOT_APPLICABLE_TRAINER_FIELDS in mmoe/training/validation.py."
    )
    twice = [name for name in TRAINER_FIELDS if sum(name in table for table in tables.values()) > 1]
    assert not twice, f"fields in more than one table: {twice}"
    for table_name, table in tables.items():
        stale = sorted(table - set(TRAINER_FIELDS))
        assert not stale, f"{table_name} lists fields TrainingArguments no longer has: {stale}"
    for reason in (*UNSUPPORTED_TRAINER_FLAGS.values(), *NOT_APPLICABLE_TRAINER_FIELDS.values()):
        assert isinstance(reason, str) and len(reason) > 20


def test_every_refused_flag_has_a_test_value():
    assert set(REFUSED_VALUES) == set(UNSUPPORTED_TRAINER_FLAGS)


@pytest.fixture
def no_training(monkeypatch):
    def fail(self, *args, **kwargs):
        raise AssertionError("a refused flag reached training")

    monkeypatch.setattr(MMoETrainer, "train", fail)


def _valid(tmp_path: Path) -> list[str]:
    return ["--preset", "demo", "--backbone", "tiny-bert", "--output_dir", str(tmp_path / "out")]


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_TRAINER_FLAGS))
def test_refused_flag_exits_2_with_its_reason(name, tmp_path, capsys, no_training):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*_valid(tmp_path), f"--{name}", *REFUSED_VALUES[name]])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(line.startswith("mmoe-train: error: ") for line in lines), lines
    expected = UNSUPPORTED_TRAINER_FLAGS[name]
    assert any(f"--{name}" in line and expected in line for line in lines), lines
    assert not (tmp_path / "out").exists(), "nothing is written before the checks pass"


@pytest.mark.parametrize("flags", [[], ["--save_strategy", "no"], ["--eval_strategy", "epoch"],
                                   ["--remove_unused_columns", "false"], ["--hub_strategy", "every_save"]])
def test_defaults_and_recipe_values_are_accepted(flags, tmp_path):
    *_, training_args = cli.parse_arguments([*_valid(tmp_path), *flags])
    assert unsupported_trainer_flag_problems(training_args) == []


@pytest.mark.parametrize("preset", sorted(cli.PRESETS))
def test_presets_set_no_refused_flag(preset, tmp_path):
    *_, training_args = cli.parse_arguments(["--preset", preset, "--output_dir", str(tmp_path / "out")])
    assert unsupported_trainer_flag_problems(training_args) == []


def test_python_api_refuses_too(tmp_path):
    args = MMoETrainingArguments(output_dir=str(tmp_path / "out"), label_names=["labels"], save_steps=10,
                                 use_cpu=True, report_to="none")
    problems = unsupported_trainer_flag_problems(args)
    assert [problem.split()[0] for problem in problems] == ["--save_steps", "--label_names"]


# ------------------------------------------------------------------------------------------- honoured fields
HONOURED_VALUES = [
    "--weight_decay", "0.1", "--adam_beta1", "0.8", "--adam_beta2", "0.95", "--adam_epsilon", "1e-6",
    "--max_grad_norm", "0.5", "--warmup_steps", "2", "--lr_scheduler_type", "cosine",
    "--gradient_accumulation_steps", "2", "--data_seed", "7", "--dataloader_drop_last", "true",
    "--eval_delay", "1", "--logging_first_step", "true",
]


def test_stage_arguments_pass_every_honoured_field_through(tmp_path):
    *_, base = cli.parse_arguments([*_valid(tmp_path), *HONOURED_VALUES])
    stage = stage_arguments(base, tmp_path / "out" / "runs" / "baseline", run_name="x-baseline", seed=3,
                            num_train_epochs=2.0, learning_rate=1e-3, label_names=["labels"], eval_strategy="epoch",
                            gradient_checkpointing=None)
    per_stage = {"output_dir", "run_name", "seed", "num_train_epochs", "learning_rate", "push_to_hub"}
    changed = [name for name in HONOURED_TRAINER_FIELDS
               if name not in per_stage and getattr(stage, name) != getattr(base, name)]
    assert not changed, f"stage_arguments drops honoured fields: {changed}"
    assert stage.weight_decay == 0.1 and stage.adam_beta2 == 0.95 and stage.data_seed == 7


class _Reached(Exception):
    pass


def _precomputed(folder: Path, n: int = 24) -> Path:
    """A tiny text dataset with unimodal predictions (no cross-fitting)."""
    rng = np.random.default_rng(0)
    words = ["sunny", "snowy", "warm", "cold"]

    def split() -> Dataset:
        labels = rng.integers(0, 2, n)
        return Dataset.from_dict(
            {"text": [" ".join(rng.choice(words, 3)) for _ in range(n)],
             "caption": [f"a {rng.choice(words)} day" for _ in range(n)], "label": labels.tolist(),
             "text_prediction": labels.tolist(), "vision_prediction": (1 - labels).tolist()},
            features=Features({"text": Value("string"), "caption": Value("string"),
                               "label": ClassLabel(names=["no", "yes"]), "text_prediction": Value("int64"),
                               "vision_prediction": Value("int64")}),
        )

    DatasetDict({"train": split(), "validation": split()}).save_to_disk(folder)
    return folder


def test_honoured_flags_reach_a_stage_trainer(tmp_path, tiny_bert_dir, monkeypatch):
    seen = {}

    class Recording(common.Trainer):
        def __init__(self, *args, **kwargs):
            seen["args"] = kwargs["args"]
            raise _Reached

    monkeypatch.setattr(common, "Trainer", Recording)
    argv = ["--backbone", str(tiny_bert_dir), "--dataset", str(_precomputed(tmp_path / "data")),
            "--output_dir", str(tmp_path / "out"), "--text_template", "{caption} | {text}", "--max_length", "16",
            "--lora_r", "2", "--num_train_epochs", "1", "--disable_tqdm", "true", "--use_cpu", "true",
            *HONOURED_VALUES]
    with pytest.raises(_Reached):
        cli.train(argv)
    args = seen["args"]
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.1, 0.8, 0.95, 1e-6)
    assert (args.max_grad_norm, args.warmup_steps, args.gradient_accumulation_steps) == (0.5, 2, 2)
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "cosine"
    assert args.data_seed == 7 and args.dataloader_drop_last and args.eval_delay == 1 and args.logging_first_step
    assert args.use_cpu and args.disable_tqdm
