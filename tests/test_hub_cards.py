"""Model cards, plots, Hub publishing and Hub-cache loading of MMoE output folders (all offline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import TrainerControl, TrainerState, TrainingArguments

from mmoe import MMoEForSequenceClassification
from mmoe.hub_cards import (
    DEFAULT_TAGS,
    INTERACTION_F1_PLOT,
    ROUTER_WEIGHTS_PLOT,
    MMoEModelCardData,
    ModelCardCallback,
    files_to_upload,
    is_hub_model_id,
    push_output_dir,
    write_model_card,
)
from mmoe.hub_cards.cli import main as card_main
from mmoe.hub_cards.context import template_context
from mmoe.hub_cards.formatting import thin_logs

REPO_ID = "org/name"
TEXTS = ["a sunny day in the park", "loving this freezing winter weather"]


def _block(accuracy: float, f1: float, std: bool = False) -> dict[str, float]:
    block = {"accuracy": accuracy, "precision": round(f1 + 0.01, 4), "recall": round(f1 - 0.01, 4), "f1": f1}
    if std:
        block.update({f"{key}_std": 0.0123 for key in list(block)})
    return block


def eval_results_fixture(seeds: bool = True) -> dict[str, Any]:
    """An ``eval_results.json`` as the pipeline writes it (no synergy rows for MMoE: absence must render)."""
    results: dict[str, Any] = {
        "split": "test",
        "baseline": _block(0.52, 0.5555555555555556, seeds),
        "mmoe": _block(0.56, 0.6012345, seeds),
        "fusion": {
            "average": _block(0.54, 0.58, seeds),
            "max": _block(0.53, 0.57, seeds),
            "prior": _block(0.55, 0.59, seeds),
            "router": _block(0.56, 0.6012345, seeds),
            "oracle": _block(0.64, 0.66, seeds),
        },
        "by_interaction": {
            "baseline": {
                "redundancy": _block(0.9, 0.9),
                "uniqueness": _block(0.5, 0.45),
                "synergy": _block(0.1, 0.12),
            },
            "mmoe": {"redundancy": _block(0.92, 0.91), "uniqueness": _block(0.55, 0.5)},
        },
        "interaction_counts": {
            "train": {"redundancy": 120, "uniqueness": 90, "synergy": 41},
            "test": {"redundancy": 40, "uniqueness": 30, "synergy": 10},
        },
        "ce_moe": 0.61,
        "ce_baseline": 0.66,
        "router_weights_by_interaction": {
            "redundancy": {"redundancy": 0.6, "uniqueness": 0.3, "synergy": 0.1},
            "uniqueness": {"redundancy": 0.25, "uniqueness": 0.55, "synergy": 0.2},
            "synergy": {"redundancy": 0.2, "uniqueness": 0.3, "synergy": 0.5},
        },
        "categorization": {
            "accuracy": 0.8,
            "confusion": {"redundancy": {"redundancy": 30, "uniqueness": 5}, "synergy": {"synergy": 8}},
        },
    }
    if seeds:
        # As the pipeline's seed aggregation writes it: means (floats) with a `<key>_std` beside every number.
        results["seeds"] = [0, 1, 2]
        for mapping in [
            *results["interaction_counts"].values(),
            *results["router_weights_by_interaction"].values(),
            *results["categorization"]["confusion"].values(),
        ]:
            for key, value in list(mapping.items()):
                mapping[key] = float(value)
                mapping[f"{key}_std"] = 0.0
        results["router_interaction_accuracy"] = 0.7
        results["by_gold_interaction"] = {
            "baseline": {"redundancy": _block(0.8, 0.8, True), "synergy": _block(0.2, 0.25, True)},
            "mmoe": {"redundancy": _block(0.85, 0.84, True), "synergy": _block(0.3, 0.35, True)},
        }
    return results


RUN = {
    "backbone": "sentence-transformers/all-MiniLM-L6-v2",
    "dataset": "MUStARD",
    "dataset_id": "org/mustard",
    "seeds": [0, 1, 2],
    "hyperparameters": {
        "learning_rate": 2e-4,
        "num_train_epochs": 3,
        "text_template": "Caption: {caption}\nUtterance: {utterance}",
    },
    "license": "apache-2.0",
    "language": "en",
}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished tiny run: saved MMoE model + tokenizer + pipeline reports + card, and reference logits."""
    from transformers import AutoTokenizer

    from mmoe import MMoEForSequenceClassification
    from mmoe.testing import save_tiny_backbone

    root = tmp_path_factory.mktemp("tiny_run")
    backbone = save_tiny_backbone(root / "backbone", "bert")
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(
        str(backbone), num_labels=2, id2label={0: "not sarcastic", 1: "sarcastic"}, lora_r=4, lora_alpha=8
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    output_dir = root / "output"
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    _write_json(output_dir / "eval_results.json", eval_results_fixture())
    _write_json(output_dir / "mmoe_run.json", RUN)
    (output_dir / "experts" / "synergy").mkdir(parents=True)  # a pipeline stage folder: never published
    (output_dir / "experts" / "synergy" / "adapter.safetensors").write_bytes(b"stage")
    write_model_card(output_dir)
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits
    return {"output_dir": output_dir, "logits": logits, "model": model, "tokenizer": tokenizer}


# ------------------------------------------------------------------ card content
def test_card_from_tiny_run_parses_and_matches_eval_results(tiny_run: dict[str, Any]) -> None:
    output_dir: Path = tiny_run["output_dir"]
    card = ModelCard.load(output_dir / "README.md")
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-classification"
    assert {"mmoe", "mixture-of-experts", "multimodal"} <= set(metadata["tags"])
    assert set(DEFAULT_TAGS) <= set(metadata["tags"]) and "bert" in metadata["tags"]
    assert metadata["base_model"] == RUN["backbone"]
    assert metadata["datasets"] == [RUN["dataset_id"]]
    assert metadata["license"] == "apache-2.0" and metadata["language"] == "en"

    # model-index numbers are exactly eval_results.json's, one entry per (deployable system, metric); the system is
    # named by the metric's name, never by `config`; the fusion rules stay in the body.
    eval_results = json.loads((output_dir / "eval_results.json").read_text())
    labels = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1"}
    expected = {(f"Baseline (single model) {label}", m): eval_results["baseline"][m] for m, label in labels.items()}
    expected.update({(f"MMoE {label}", m): eval_results["mmoe"][m] for m, label in labels.items()})
    found = {(r.metric_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert found == expected
    assert {r.metric_config for r in card.data.eval_results} == {None}
    assert "| Fusion: oracle (gold interaction) | 0.6400 ± 0.0123 |" in card.text
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert {r.dataset_type for r in card.data.eval_results} == {RUN["dataset_id"]}
    assert metadata["model-index"][0]["name"] == card.data.model_name

    # PNGs exist and are embedded; body sections are there.
    for plot in (INTERACTION_F1_PLOT, ROUTER_WEIGHTS_PLOT):
        assert (output_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in card.text
    text = card.text
    assert "AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)" in text
    assert "0.6012 ± 0.0123" in text and "3 seeds" in text  # mean ± std over seeds
    assert "| synergy | 10 | 0.1000 | 0.1200 | – | – | – |" in text  # absent MMoE synergy block
    assert "| redundancy | 120 (47.8 %) | 40 (50.0 %) |" in text  # interaction statistics, no `_std` rows
    assert "_std" not in text
    assert "| redundancy | 0.600 ± 0.000 | 0.300 ± 0.000 | 0.100 ± 0.000 |" in text  # router weights
    assert "| synergy | 8 | 0.2000 ± 0.0123 | 0.2500 ± 0.0123 |" in text  # per gold interaction
    assert "**70.0 %** of the test" in text  # router interaction accuracy
    assert "text_template = 'Caption: {caption}\\nUtterance: {utterance}'" in text  # the run's input format
    assert "r=4, α=8, dropout=0.05" in text and "`sarcastic`" not in text and "sarcastic" in text
    assert "learning_rate" in text and "transformers:" in text
    assert "@inproceedings{yu2024mmoe" in text and "@inproceedings{xin2025i2moe" in text
    assert "2311.09580" in text and "2505.19190" in text


def test_card_renders_whatever_exists(tmp_path: Path) -> None:
    """No eval results, no run file, then a sparse eval_results.json: never a crash, no dangling plots."""
    _write_json(tmp_path / "config.json", {"model_type": "mmoe", "experts": ["redundancy", "synergy"]})
    card = write_model_card(tmp_path)
    assert "model-index" not in card.data.to_dict()
    assert not any((tmp_path / p).exists() for p in (INTERACTION_F1_PLOT, ROUTER_WEIGHTS_PLOT))
    assert ".png" not in card.text and "No evaluation results" in card.text

    _write_json(tmp_path / "eval_results.json", {"split": "validation", "mmoe": {"f1": 0.5}, "fusion": {}})
    write_model_card(tmp_path, model_id="me/sparse")
    card = ModelCard.load(tmp_path / "README.md")
    assert [(r.metric_name, r.metric_type, r.metric_value) for r in card.data.eval_results] == [("MMoE F1", "f1", 0.5)]
    assert 'model_id = "me/sparse"' in card.text and ".png" not in card.text

    # by_interaction with one system only still plots; stale plots disappear when their data goes.
    results = {"split": "test", "by_interaction": {"mmoe": {"synergy": {"f1": 0.4}}}}
    _write_json(tmp_path / "eval_results.json", results)
    write_model_card(tmp_path)
    assert (tmp_path / INTERACTION_F1_PLOT).exists()
    _write_json(tmp_path / "eval_results.json", {})
    write_model_card(tmp_path)
    assert not (tmp_path / INTERACTION_F1_PLOT).exists()


def test_thin_logs_keeps_evaluations_and_last_row() -> None:
    logs = [{"Step": i, **({"Validation Loss": 0.5} if i % 10 == 0 else {})} for i in range(1, 100)]
    kept = thin_logs(logs, limit=20)
    steps = [row["Step"] for row in kept]
    assert len(kept) == 20 and steps == sorted(steps) and steps[-1] == 99 and steps[0] == 1
    assert {10, 20, 30, 40, 50, 60, 70, 80, 90} <= set(steps)


def test_card_data_helpers() -> None:
    assert is_hub_model_id("sentence-transformers/all-MiniLM-L6-v2")
    assert not is_hub_model_id("/tmp/backbone") and not is_hub_model_id("backbone") and not is_hub_model_id(None)
    data = MMoEModelCardData(
        config={"backbone_name_or_path": "/local/bb", "backbone_config": {"model_type": "qwen2"}},
        eval_results=eval_results_fixture(seeds=False),
    )
    assert data.resolved_base_model() is None and data.resolved_model_name() == "MMoE (qwen2)"
    metadata = data.to_metadata()
    assert "base_model" not in metadata and "datasets" not in metadata and "qwen2" in metadata["tags"]
    assert len(metadata["model-index"][0]["results"][0]["metrics"]) == 2 * 4  # MMoE and the baseline
    with pytest.raises(TypeError):
        MMoEModelCardData.from_output_dir("/nonexistent", not_a_field=1)

    # A binary system that calls every example positive is flagged (MUStARD pitfall: F1 0.60 at 43 % accuracy).
    constant = {"accuracy": 0.43, "precision": 0.43, "recall": 1.0, "f1": 0.6014}
    data = MMoEModelCardData(config={"id2label": {"0": "no", "1": "yes"}}, eval_results={"baseline": constant})
    assert template_context(data)["degenerate_notes"] == [
        "Baseline (single model) predicts the positive class for every test example."
    ]


# ------------------------------------------------------------------ training callback
def test_model_card_callback_collects_and_persists(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path / "router"), learning_rate=1e-3, hub_token="secret", seed=7)
    state, control = TrainerState(), TrainerControl()
    card_data = MMoEModelCardData()
    callback = ModelCardCallback(card_data, stage="router", output_dir=tmp_path)
    callback.on_train_begin(args, state, control, model=torch.nn.Linear(2, 2))
    for step, loss in ((1, 0.9), (2, 0.7)):
        state.global_step, state.epoch = step, step / 2
        callback.on_log(args, state, control, logs={"loss": loss, "learning_rate": 1e-3})
    callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.8, "eval_f1": 0.5, "eval_runtime": 1.0})
    state.best_metric = 0.5
    callback.on_train_end(args, state, control)

    record = card_data.training_stages["router"]
    assert record["hyperparameters"] == {"learning_rate": 1e-3, "seed": 7}  # no token, no output_dir
    assert record["logs"] == [
        {"Epoch": 0.5, "Step": 1, "Training Loss": 0.9},
        {"Epoch": 1.0, "Step": 2, "Training Loss": 0.7, "Validation Loss": 0.8, "Validation f1": 0.5},
    ]
    assert record["summary"]["model_class"] == "Linear" and record["summary"]["global_step"] == 2
    saved = json.loads((tmp_path / "mmoe_training_logs.json").read_text())
    assert saved["stages"]["router"]["logs"] == record["logs"]

    # A second stage merges into the same file, and the card shows both.
    ModelCardCallback(stage="baseline").save(tmp_path)
    assert set(json.loads((tmp_path / "mmoe_training_logs.json").read_text())["stages"]) == {"router", "baseline"}
    _write_json(tmp_path / "config.json", {"model_type": "mmoe"})
    card = write_model_card(tmp_path)
    assert "<b>router</b>" in card.text and "| learning_rate | 0.001 |" in card.text
    assert "generated_from_trainer" in card.data.tags


class _TinyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.linear(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_model_card_callback_in_a_real_trainer(tmp_path: Path) -> None:
    """The callback must not disturb a running Trainer (e.g. by building TrainingArguments, which resets accelerate)."""
    from datasets import Dataset
    from transformers import Trainer

    dataset = Dataset.from_dict({"x": [[0.0, 1.0], [1.0, 0.0]] * 4, "labels": [1, 0] * 4})
    args = TrainingArguments(
        output_dir=str(tmp_path / "baseline"), per_device_train_batch_size=4, num_train_epochs=2, logging_steps=1,
        eval_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        learning_rate=1e-2,
    )  # fmt: skip
    callback = ModelCardCallback(stage="baseline", output_dir=tmp_path)
    Trainer(
        model=_TinyClassifier(), args=args, train_dataset=dataset, eval_dataset=dataset, callbacks=[callback]
    ).train()
    record = json.loads((tmp_path / "mmoe_training_logs.json").read_text())["stages"]["baseline"]
    assert record["hyperparameters"] == {
        "per_device_train_batch_size": 4, "num_train_epochs": 2, "learning_rate": 1e-2, "eval_strategy": "epoch"
    }  # fmt: skip
    assert [row["Step"] for row in record["logs"]] == [1, 2, 3, 4]
    assert "Validation Loss" in record["logs"][1] and "Training Loss" in record["logs"][-1]
    assert record["summary"]["global_step"] == 4 and record["summary"]["model_class"] == "_TinyClassifier"


# ------------------------------------------------------------------ publishing
def _publishable_folder(root: Path) -> Path:
    """A pipeline output folder with root files, stage folders, checkpoints and TensorBoard runs."""
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "config.json", {"model_type": "mmoe", "backbone_config": {"model_type": "bert"}})
    _write_json(root / "eval_results.json", eval_results_fixture())
    _write_json(root / "mmoe_run.json", RUN)
    for name in ("configuration_mmoe.py", "modeling_mmoe.py", "fusion.py", "tokenizer.json", "tokenizer_config.json"):
        (root / name).write_text("# stub\n")
    (root / "model.safetensors").write_bytes(b"weights")
    (root / ".DS_Store").write_bytes(b"")
    for folder in ("baseline", "experts/synergy", "router", "categorize", "seed-0", "checkpoint-10", "runs/Nov01"):
        (root / folder).mkdir(parents=True)
        (root / folder / "model.safetensors").write_bytes(b"stage")
    return root


PUBLISHED = [
    "README.md",
    "config.json",
    "configuration_mmoe.py",
    "eval_results.json",
    "fusion.py",
    INTERACTION_F1_PLOT,
    "mmoe_run.json",
    "model.safetensors",
    "modeling_mmoe.py",
    ROUTER_WEIGHTS_PLOT,
    "tokenizer.json",
    "tokenizer_config.json",
]


def test_push_output_dir_sends_one_commit_with_exact_files(
    tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_environment")
    folder = _publishable_folder(tmp_path / "out")
    commit = push_output_dir(folder, REPO_ID, private=True, token="hf_explicit", commit_message="Add model")

    assert captured_hub["create_repo"] == [
        {"repo_id": REPO_ID, "token": "hf_explicit", "private": True, "exist_ok": True, "repo_type": "model"}
    ]
    assert len(captured_hub["create_commit"]) == 1
    sent = captured_hub["create_commit"][0]
    assert sent["repo_id"] == REPO_ID and sent["commit_message"] == "Add model" and sent["repo_type"] == "model"
    assert sorted(op.path_in_repo for op in sent["operations"]) == PUBLISHED
    assert commit.oid == "0" * 40
    # The card was (re)generated for the target repo before the upload.
    assert f'model_id = "{REPO_ID}"' in (folder / "README.md").read_text()
    assert files_to_upload(folder) == PUBLISHED
    assert files_to_upload(folder, ignore_patterns=["*.png"]) == [p for p in PUBLISHED if not p.endswith(".png")]


def test_push_keeps_hand_written_card_and_uses_env_token(
    tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    folder = _publishable_folder(tmp_path / "out")
    (folder / "README.md").write_text("# My own card\n")
    push_output_dir(folder, REPO_ID, revision="experiment")
    assert (folder / "README.md").read_text() == "# My own card\n"
    assert captured_hub["create_repo"][0]["token"] is None  # huggingface_hub falls back to HF_TOKEN / login
    assert captured_hub["create_repo"][0]["private"] is False
    assert captured_hub["create_branch"] == [
        {"repo_id": REPO_ID, "branch": "experiment", "exist_ok": True, "repo_type": "model"}
    ]
    assert captured_hub["create_commit"][0]["revision"] == "experiment"
    assert sorted(op.path_in_repo for op in captured_hub["create_commit"][0]["operations"]) == [
        p for p in PUBLISHED if not p.endswith(".png")
    ]
    with pytest.raises(FileNotFoundError, match="config.json"):
        push_output_dir(tmp_path / "empty", REPO_ID)


def test_cli_regenerates_and_pushes(tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]]) -> None:
    folder = _publishable_folder(tmp_path / "out")
    assert card_main(["--output_dir", str(folder)]) == 0
    assert ModelCard.load(folder / "README.md").data.model_name
    assert captured_hub["create_commit"] == []

    argv = ["--output_dir", str(folder), "--push_to_hub", "--hub_model_id", REPO_ID, "--hub_private_repo"]
    assert card_main(argv + ["--hub_token", "hf_cli"]) == 0
    assert captured_hub["create_repo"][0]["private"] is True and captured_hub["create_repo"][0]["token"] == "hf_cli"
    assert len(captured_hub["create_commit"]) == 1
    assert sorted(op.path_in_repo for op in captured_hub["create_commit"][0]["operations"]) == PUBLISHED
    with pytest.raises(SystemExit):
        card_main(["--output_dir", str(folder), "--push_to_hub"])
    with pytest.raises(SystemExit):
        card_main(["--output_dir", str(tmp_path / "missing")])


def test_tiny_run_publishes_model_files_only(
    tiny_run: dict[str, Any], captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    output_dir: Path = tiny_run["output_dir"]
    push_output_dir(output_dir, REPO_ID, update_card=False)
    sent = sorted(op.path_in_repo for op in captured_hub["create_commit"][0]["operations"])
    required = {"README.md", "config.json", "model.safetensors", "configuration_mmoe.py", "modeling_mmoe.py"}
    required |= {"fusion.py", "tokenizer_config.json", INTERACTION_F1_PLOT, ROUTER_WEIGHTS_PLOT, "eval_results.json"}
    assert required <= set(sent)
    assert sent == files_to_upload(output_dir) and all("/" not in path for path in sent)


def test_model_push_to_hub_sends_the_folders_files_and_card_in_one_commit(
    tiny_run: dict[str, Any], captured_hub: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    output_dir: Path = tiny_run["output_dir"]
    folder = tmp_path / "copy"
    shutil.copytree(output_dir, folder)
    model = MMoEForSequenceClassification.from_pretrained(folder)  # name_or_path: the output folder
    model.push_to_hub(REPO_ID, private=True, tags=["sarcasm"], commit_description="tiny")
    assert len(captured_hub["create_commit"]) == 1 and captured_hub["create_repo"][0]["private"] is True
    commit = captured_hub["create_commit"][0]
    assert commit["commit_description"] == "tiny"
    # The freshly saved model + the folder's tokenizer, card, plots and reports: what push_output_dir sends.
    assert sorted(op.path_in_repo for op in commit["operations"]) == files_to_upload(folder)
    (card_text,) = commit["cards"]
    assert "- sarcasm" in card_text and ModelCard(card_text).text == ModelCard.load(folder / "README.md").text
    assert "- sarcasm" not in (folder / "README.md").read_text()  # the folder itself is untouched


def test_push_output_dir_adds_tags_to_the_uploaded_card(
    tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    folder = _publishable_folder(tmp_path / "out")
    push_output_dir(folder, REPO_ID, tags=["sarcasm", "mmoe"])
    (card_text,) = captured_hub["create_commit"][0]["cards"]
    tags = ModelCard(card_text).data.tags
    assert tags.count("mmoe") == 1 and "sarcasm" in tags and set(DEFAULT_TAGS) <= set(tags)
    assert "sarcasm" not in ModelCard.load(folder / "README.md").data.tags
    (folder / "README.md").write_text("# My own card\n")  # a hand-written card without metadata gets some
    push_output_dir(folder, REPO_ID, tags=["sarcasm"])
    card = ModelCard(captured_hub["create_commit"][1]["cards"][0])
    assert card.data.tags == ["sarcasm"] and card.text.strip() == "# My own card"


# ------------------------------------------------------------------ loading from a local Hub cache
_LOAD_FROM_CACHE = textwrap.dedent(
    """
    import json, sys
    sys.modules["mmoe"] = None  # `import mmoe` now raises ImportError: the remote code must stand alone
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = json.loads(sys.argv[1])
    tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True)  # reads config.json too
    model = AutoModelForSequenceClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
    assert not any(name == "mmoe" or name.startswith("mmoe.") for name in sys.modules if sys.modules[name])
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    print(json.dumps({{"module": type(model).__module__, "logits": logits.tolist()}}))
    """
)


def test_output_dir_loads_from_local_hub_cache_without_mmoe(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    output_dir: Path = tiny_run["output_dir"]
    commit = "1234567890abcdef1234567890abcdef12345678"
    repo_cache = tmp_path / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo_cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files_to_upload(output_dir):  # exactly what would be published
        shutil.copy2(output_dir / name, snapshot / name)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(commit)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_FROM_CACHE.format(repo_id=REPO_ID), json.dumps(TEXTS)],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    torch.testing.assert_close(torch.tensor(loaded["logits"]), tiny_run["logits"], rtol=1e-5, atol=1e-5)
