"""A training stage that turns non-finite stops with a clear error instead of saving a NaN model as a success."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from mmoe.training.nonfinite import NonFiniteLossCallback, NonFiniteTrainingError, assert_finite_state


def _trainer(tmp_path: Path, learning_rate: float, **overrides) -> Trainer:
    """A tiny BERT classifier on 16 rows of random token ids, with the callback of stage ``"baseline"``."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                        vocab_size=100)
    model = BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    rows = {"input_ids": torch.randint(1, 100, (16, 8), generator=generator).tolist(),
            "labels": [i % 2 for i in range(16)]}
    settings = dict(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], save_strategy="no",
                    learning_rate=learning_rate, num_train_epochs=2, per_device_train_batch_size=4, logging_steps=1,
                    disable_tqdm=True, seed=0)
    args = TrainingArguments(**{**settings, **overrides})
    return Trainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                   callbacks=[NonFiniteLossCallback("baseline")])


def test_a_diverging_run_stops_with_a_clear_error(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, learning_rate=1e8)
    with pytest.raises(NonFiniteTrainingError) as caught:
        trainer.train()
    message = str(caught.value)
    assert message.startswith("baseline: ") and "at step " in message and "(epoch " in message
    assert "grad_norm is nan" in message or "trainable parameter(s) hold NaN" in message
    assert "learning rate" in message and "--bf16 instead of --fp16" in message and "check the data" in message
    assert isinstance(caught.value, RuntimeError)
    assert trainer.state.global_step < 8  # stopped early, not after the planned 8 steps


def test_a_filtered_nan_loss_is_caught_by_the_weights_check(tmp_path: Path) -> None:
    """logging_nan_inf_filter hides the NaN loss and no grad_norm is logged without clipping and with rare logs:
    the check of the trainable parameters at the end of the epoch still stops the run."""
    trainer = _trainer(tmp_path, learning_rate=1e8, logging_steps=1000, max_grad_norm=0.0)
    with pytest.raises(NonFiniteTrainingError, match="trainable parameter.*at the end of the epoch"):
        trainer.train()
    assert trainer.state.global_step == 4  # the first epoch's end


def test_no_non_finite_checkpoint_is_written(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, learning_rate=1e8, save_strategy="steps", save_steps=1, logging_steps=1000,
                       max_grad_norm=0.0)
    with pytest.raises(NonFiniteTrainingError):
        trainer.train()
    checkpoints = sorted((tmp_path / "out").glob("checkpoint-*"))
    assert checkpoints  # the steps before the divergence were saved; the diverged step was not
    for checkpoint in checkpoints:
        state = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(tensor).all() for tensor in state.values()), checkpoint.name


def test_a_sane_run_trains_to_the_end(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, learning_rate=1e-3)
    result = trainer.train()
    assert trainer.state.global_step == 8 and math.isfinite(result.training_loss)
    logged = [log for log in trainer.state.log_history if "grad_norm" in log]
    assert logged and all(math.isfinite(log["grad_norm"]) for log in logged)


def _log(logs: dict, fp16: bool = False) -> None:
    state = TrainerState(global_step=7, epoch=1.75)
    args = SimpleNamespace(fp16=fp16)
    NonFiniteLossCallback("expert 'synergy'").on_log(args, state, TrainerControl(), logs=logs)


@pytest.mark.parametrize(
    ("logs", "key"),
    [
        ({"loss": float("nan"), "learning_rate": 1e-3}, "loss"),
        ({"loss": 0.5, "grad_norm": float("inf")}, "grad_norm"),
        ({"eval_loss": np.float32("nan"), "eval_accuracy": 0.5}, "eval_loss"),
        ({"eval_fused_loss": torch.tensor(-float("inf"))}, "eval_fused_loss"),
    ],
)
def test_every_logged_loss_and_the_gradient_norm_are_checked(logs: dict, key: str) -> None:
    expected = rf"^expert 'synergy': {key} is -?(nan|inf) at step 7 \(epoch 1.75\)"
    with pytest.raises(NonFiniteTrainingError, match=expected):
        _log(logs)


def test_other_values_and_fp16_overflow_steps_pass() -> None:
    _log({"loss": 0.3, "grad_norm": 1.2, "learning_rate": float("nan"), "eval_accuracy": float("nan")})
    _log({"loss": 0.3, "grad_norm": float("inf")}, fp16=True)  # the fp16 scaler skips such steps on purpose
    with pytest.raises(NonFiniteTrainingError, match="loss is nan"):
        _log({"loss": float("nan"), "grad_norm": 1.0}, fp16=True)


def test_assert_finite_state_names_the_non_finite_tensors() -> None:
    state = {"head.weight": torch.ones(2, 2), "head.bias": torch.tensor([0.0, float("nan")]),
             "router.weight": torch.full((3,), float("inf")), "position_ids": torch.arange(4)}
    expected = r"router stage weights: 2 of 4 tensor\(s\).*head.bias, router.weight"
    with pytest.raises(NonFiniteTrainingError, match=expected):
        assert_finite_state(state, "router stage weights")
    assert_finite_state({"head.weight": torch.ones(2), "position_ids": torch.arange(3)}, "finite weights")
    assert_finite_state({}, "nothing")
