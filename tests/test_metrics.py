"""Metrics that do not reward a one-class answer: balanced accuracy and macro-F1 in every metric block, selection
by macro-F1 by default, and a warning wherever a system predicts a single class (DESIGN, section 6)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score
from test_pipeline import _precomputed_dataset, _tiny_args
from transformers import EvalPrediction

from mmoe.hub_cards import MMoEModelCardData
from mmoe.hub_cards.context import template_context
from mmoe.metrics import METRIC_NAMES, classification_scores, load_classification_metric
from mmoe.training import seeds, trainer
from mmoe.training.arguments import MMoETrainingArguments
from mmoe.training.cli import format_summary, parse_arguments, train
from mmoe.training.degenerate import degenerate_warnings
from mmoe.training.stages.common import selection_metric
from mmoe.training.trainer_utils import make_compute_metrics, scores
from mmoe.training.validation import ArgumentsError, training_argument_problems

# (predictions, references, num_labels): balanced, one-class predictions, a class absent from the references,
# a class never predicted, every prediction wrong, multi-class with an absent class.
CASES = [
    ([0, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, 1], 2),
    ([1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1, 0], 2),  # the all-"sarcastic" answer
    ([0, 0, 0, 0], [1, 0, 1, 1], 2),
    ([0, 1, 1, 0], [1, 1, 1, 1], 2),  # class 0 absent from the references
    ([1, 1, 0], [0, 0, 1], 2),
    ([0, 2, 2, 1, 0, 2], [0, 2, 1, 1, 0, 0], 3),
    ([2, 2, 2, 2, 2], [0, 2, 0, 2, 2], 4),  # one-class answer; classes 1 and 3 absent from the references
    ([0, 1, 3, 3], [0, 1, 1, 0], 4),  # class 3 predicted but absent from the references
]


def _sklearn(predictions: list[int], references: list[int], num_labels: int) -> dict[str, float]:
    labels = list(range(num_labels))
    average = "binary" if num_labels == 2 else "macro"
    kwargs = {"zero_division": 0, "average": average, **({"labels": labels} if average == "macro" else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return {
            "accuracy": accuracy_score(references, predictions),
            "precision": precision_score(references, predictions, **kwargs),
            "recall": recall_score(references, predictions, **kwargs),
            "f1": f1_score(references, predictions, **kwargs),
            "balanced_accuracy": balanced_accuracy_score(references, predictions),
            "macro_f1": f1_score(references, predictions, average="macro", labels=labels, zero_division=0),
        }


@pytest.mark.parametrize("predictions, references, num_labels", CASES)
def test_every_metric_matches_sklearn(predictions, references, num_labels):
    expected = _sklearn(predictions, references, num_labels)
    for computed in (
        load_classification_metric().compute(predictions=predictions, references=references, num_labels=num_labels),
        classification_scores(np.array(predictions), np.array(references), num_labels),
        scores(np.array(predictions), np.array(references), num_labels),
    ):
        assert set(computed) == set(METRIC_NAMES)
        for name, value in expected.items():
            assert computed[name] == pytest.approx(value, abs=1e-9), name


def test_compute_metrics_reports_balanced_accuracy_and_macro_f1():
    predictions, references, num_labels = CASES[1]
    logits = np.eye(num_labels)[predictions]
    out = make_compute_metrics(num_labels)(EvalPrediction(predictions=logits, label_ids=np.array(references)))
    expected = _sklearn(predictions, references, num_labels)
    assert out["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"]) == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert out["f1"] == pytest.approx(expected["f1"]) and out["f1"] > out["macro_f1"]  # binary F1 rewards it
    assert out["predicted_classes"] == 1.0


def test_empty_block_and_seed_spread_cover_the_new_metrics():
    assert scores(np.array([]), np.array([]), 2) == dict.fromkeys(METRIC_NAMES, 0.0)
    runs = [{"mmoe": scores(np.array(p), np.array(r), 2)} for p, r, _ in CASES[:2]]
    combined = seeds.aggregate_seeds(runs)
    for name in METRIC_NAMES:
        values = [run["mmoe"][name] for run in runs]
        assert combined["mmoe"][name] == pytest.approx(np.mean(values))
        assert combined["mmoe"][f"{name}_std"] == pytest.approx(np.std(values))


# ------------------------------------------------------------------ selection
def test_selection_metric_defaults_to_macro_f1_and_refuses_unknown_names():
    _, _, training_args = parse_arguments(["--output_dir", "x"])
    assert training_args.selection_metric == "macro_f1"
    for name in ("macro_f1", "balanced_accuracy", "accuracy", "f1", "precision", "recall"):
        assert parse_arguments(["--selection_metric", name])[2].selection_metric == name
    with pytest.raises(ArgumentsError, match="--selection_metric must be one of macro_f1, balanced_accuracy"):
        MMoETrainingArguments(output_dir="x", selection_metric="auc")
    args = SimpleNamespace(**{**vars(training_args), "selection_metric": "auc"})
    assert any("--selection_metric" in p for p in training_argument_problems(args))


@pytest.mark.parametrize(
    "metric, one_class_choice",
    [("f1", "accuracy"), ("precision", "accuracy"), ("recall", "accuracy"), ("accuracy", "accuracy"),
     ("macro_f1", "macro_f1"), ("balanced_accuracy", "balanced_accuracy")],
)
def test_single_class_validation_falls_back_only_for_positive_class_metrics(metric, one_class_choice):
    """On one class binary F1/precision/recall are constant; balanced accuracy equals accuracy and macro-F1 grows
    with it, so those two are kept."""
    ctx = SimpleNamespace(args=SimpleNamespace(selection_metric=metric, label_column="label"))
    assert selection_metric(ctx, "synergy", Dataset.from_dict({"label": [1, 1, 1]})) == one_class_choice
    assert selection_metric(ctx, "synergy", Dataset.from_dict({"label": [0, 1, 1]})) == metric
    # ...and the reason holds: on one class, balanced accuracy is the accuracy and macro-F1 is monotone in it.
    references = np.ones(10, dtype=int)
    ranked = []
    for correct in range(1, 11):
        predictions = np.r_[np.ones(correct, dtype=int), np.zeros(10 - correct, dtype=int)]
        block = scores(predictions, references, 2)
        assert block["balanced_accuracy"] == pytest.approx(block["accuracy"])
        ranked.append(block["macro_f1"])
    assert ranked == sorted(ranked) and len(set(ranked)) == len(ranked)


def test_keep_best_state_follows_macro_f1_not_binary_f1():
    """Epoch 1 answers one class (binary F1 0.89, macro-F1 0.44), epoch 2 tells the classes apart (F1 0.75,
    macro-F1 0.70): selection by macro_f1 keeps epoch 2, selection by f1 would keep the degenerate epoch 1."""
    from transformers import TrainerControl, TrainerState

    from mmoe.training.trainer_utils import KeepBestStateCallback

    epochs = {1.0: {"eval_f1": 0.89, "eval_macro_f1": 0.44}, 2.0: {"eval_f1": 0.75, "eval_macro_f1": 0.70},
              3.0: {"eval_f1": 0.80, "eval_macro_f1": 0.60}}
    chosen = {}
    for metric in ("macro_f1", "f1"):
        state = {"w": np.zeros(1)}
        callback = KeepBestStateCallback(lambda s=state: {"w": torch.tensor(s["w"])},
                                         lambda new, s=state: s.update(w=new["w"].numpy()), metric)
        trainer_state = TrainerState()
        for epoch, metrics in epochs.items():
            trainer_state.epoch, state["w"] = epoch, np.array([epoch])
            callback.on_evaluate(None, trainer_state, TrainerControl(), metrics=metrics)
        callback.on_train_end(None, trainer_state, TrainerControl())
        chosen[metric] = (callback.best_epoch, float(state["w"][0]))
    assert chosen == {"macro_f1": (2.0, 2.0), "f1": (1.0, 1.0)}


def _imbalanced_dataset(folder: Path) -> Path:
    """The tiny dataset of ``test_pipeline`` with 80 % positive validation and test labels."""
    source = load_from_disk(str(_precomputed_dataset(folder / "source", n_train=24, n_eval=20)))
    for split in ("validation", "test"):
        source[split] = source[split].map(lambda row, i: {"label": int(i % 5 != 0)}, with_indices=True)
    source.save_to_disk(str(folder / "imbalanced"))
    return folder / "imbalanced"


@pytest.fixture(scope="module")
def degenerate_run(tmp_path_factory, tiny_bert_dir):
    """A tiny run on an imbalanced split whose evaluation outputs are made one-class (every baseline logit and
    every expert logit favours "yes"), so that the flags, the summary and the card are exercised deterministically;
    selection, training and scoring run unchanged."""
    root = tmp_path_factory.mktemp("degenerate")
    data = _imbalanced_dataset(root)
    real = trainer.evaluate_mixture

    def one_class(mix_out, base_out, *args, **kwargs):
        base_out = {**base_out, "logits": np.tile(np.array([0.0, 1.0], dtype=np.float32), (len(base_out["logits"]), 1))}
        expert_logits = np.zeros_like(mix_out["expert_logits"])
        expert_logits[..., 1] = 1.0
        return real({**mix_out, "expert_logits": expert_logits}, base_out, *args, **kwargs)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(trainer, "evaluate_mixture", one_class)
    try:
        args = _tiny_args(tiny_bert_dir, data, root / "out", "--baseline_num_train_epochs", "4",
                          "--learning_rate", "5e-3", "--per_device_train_batch_size", "4")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            results = train(args)
    finally:
        monkeypatch.undo()
    return root / "out", results, printed.getvalue()


def test_every_stage_selects_its_epoch_by_macro_f1(degenerate_run):
    """Every stage records macro_f1 as its selection metric, and the baseline's selected epoch is the one with the
    highest validation macro-F1 of those logged (a tiny random backbone may tie across epochs; the ranking itself
    is tested on hand-made metrics above)."""
    out, results, _ = degenerate_run
    stages = results["stages"]
    assert stages["baseline"]["selection_metric"] == "macro_f1"
    assert stages["router"]["selection_metric"] == "macro_f1"
    assert all(s.get("selection_metric", "macro_f1") == "macro_f1" for s in stages["experts"].values())
    logs = json.loads((out / "mmoe_training_logs.json").read_text())["stages"]["baseline"]["logs"]
    evaluations = [row for row in logs if "Validation macro_f1" in row]
    assert len(evaluations) == 4
    best = max(row["Validation macro_f1"] for row in evaluations)
    selected = stages["baseline"]["validation"]
    assert selected["macro_f1"] == pytest.approx(best, abs=1e-4)
    assert selected["epoch"] == next(row["Epoch"] for row in evaluations if row["Validation macro_f1"] == best)
    for block in (results["baseline"], results["mmoe"], *results["fusion"].values(),
                  *results["by_interaction"]["baseline"].values(), *results["by_interaction"]["mmoe"].values(),
                  results["validation"]["mmoe"]):
        assert {"balanced_accuracy", "macro_f1"} <= set(block)


def test_one_class_answers_are_flagged_everywhere(degenerate_run):
    out, results, printed = degenerate_run
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["degenerate"] == {"baseline": True, "mmoe": True}
    assert saved["predicted_classes"] == {"baseline": [1], "mmoe": [1]}
    labels = np.asarray(load_from_disk(str(out / "categorize" / "dataset"))["test"]["label"])
    assert saved["baseline"]["f1"] == pytest.approx(f1_score(labels, np.ones_like(labels)))
    assert saved["baseline"]["balanced_accuracy"] == pytest.approx(0.5)
    # the CLI's summary
    assert ("WARNING: the baseline predicts a single class (label 1) on the test split: its F1 is not evidence of "
            "skill; compare balanced accuracy.") in printed
    assert "WARNING: MMoE (router fusion) predicts a single class (label 1) on the test split" in printed
    assert "bal_acc" in printed and "macro_f1" in printed
    # the model card
    card = (out / "README.md").read_text()
    assert "> The baseline predicts a single class (label 1: yes) on the test split: its F1 is not evidence" in card
    assert "> MMoE (router fusion) predicts a single class (label 1: yes) on the test split" in card
    assert "| System | Accuracy | Balanced accuracy | Precision | Recall | F1 | Macro-F1 |" in card
    assert f"{saved['baseline']['macro_f1']:.4f}" in card


def test_no_warning_without_a_one_class_answer():
    results = {"split": "test", "degenerate": {"baseline": False, "mmoe": False},
               "mmoe": scores(np.array([0, 1]), np.array([0, 1]), 2)}
    assert degenerate_warnings(results) == [] and "WARNING" not in format_summary(results)
    data = MMoEModelCardData(config={"id2label": {"0": "no", "1": "yes"}}, eval_results=results)
    assert template_context(data)["degenerate_notes"] == []


def test_several_seeds_name_the_degenerate_seeds():
    results = {"split": "test", "degenerate": {"baseline": True, "mmoe": False},
               "degenerate_seeds": {"baseline": [0, 2], "mmoe": []}, "predicted_classes": {"baseline": [1]}}
    assert degenerate_warnings(results) == [
        "the baseline predicts a single class (label 1) on the test split in seeds 0, 2: its F1 is not evidence "
        "of skill; compare balanced accuracy."
    ]
