"""``MMoETrainer`` as a library: in-memory datasets, a model given as an object, evaluate/predict/save_model,
``compute_metrics`` and ``callbacks``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from test_pipeline import _precomputed_dataset
from transformers import TrainerCallback

from mmoe import MMoEForSequenceClassification, MMoETrainer, MMoETrainingArguments
from mmoe.training.validation import ArgumentsError


class StageCounter(TrainerCallback):
    def __init__(self) -> None:
        self.trainings = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainings += 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("api")
    ds = DatasetDict.load_from_disk(str(_precomputed_dataset(root / "data")))
    args = MMoETrainingArguments(
        output_dir=str(root / "out"), text_template="{caption} | {text}", max_length=24, max_steps=2,
        per_device_train_batch_size=8, min_expert_examples=4, report_to="none", disable_tqdm=True,
    )
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, lora_r=4,
                                                        router_hidden_size=8, router_input="experts")
    counter = StageCounter()
    seen = []

    def metrics(prediction):
        seen.append(prediction)
        return {"mean_log_prob_at_label": float(np.mean(
            prediction.predictions[np.arange(len(prediction.label_ids)), prediction.label_ids]))}

    trainer = MMoETrainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                          test_dataset=ds["test"], compute_metrics=metrics, callbacks=[counter])
    results = trainer.train()
    return trainer, results, ds, counter, seen, root


def test_the_model_object_gives_the_options(trained):
    _, _, _, _, _, root = trained
    config = json.loads((root / "out" / "config.json").read_text())
    assert config["lora_r"] == 4 and config["router_input"] == "experts" and config["router_hidden_size"] == 8


def test_callbacks_reach_every_stage_and_compute_metrics_reads_log_probabilities(trained):
    trainer, results, ds, counter, seen, _ = trained
    # baseline, three experts and the router each run one Trainer.train (no expert falls back at 4 rows)
    assert counter.trainings == 5
    predicted = trainer.predict(ds["test"])
    probabilities = np.exp(predicted["logits"])
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    labels = np.asarray(ds["test"]["label"])
    expected = float(np.mean(predicted["logits"][np.arange(len(labels)), labels]))
    assert results["metrics"]["mean_log_prob_at_label"] == pytest.approx(expected, abs=1e-5)


def test_evaluate_on_a_dataset_with_predictions_repeats_the_report(trained):
    trainer, results, ds, _, _, _ = trained
    again = trainer.evaluate(ds["test"])  # the prediction columns categorize its rows
    assert trainer.evaluate() is results
    for system in ("baseline", "mmoe"):
        assert again[system]["accuracy"] == pytest.approx(results[system]["accuracy"])
    assert again["by_interaction"]["mmoe"].keys() == results["by_interaction"]["mmoe"].keys()


def test_evaluate_without_predictions_scores_overall_and_every_fusion_rule(trained):
    trainer, results, ds, _, _, _ = trained
    bare = ds["test"].remove_columns(["text_prediction", "vision_prediction"])
    report = trainer.evaluate(bare)
    assert "by_interaction" not in report and set(report["fusion"]) == {"average", "max", "prior", "router"}
    predictions = trainer.predict(bare)["predictions"]
    assert report["mmoe"]["accuracy"] == pytest.approx(float((predictions == np.asarray(bare["label"])).mean()))
    assert report["mmoe"]["accuracy"] == pytest.approx(results["mmoe"]["accuracy"])


def test_save_model_writes_a_folder_that_reloads(trained, tmp_path):
    trainer, _, ds, _, _, _ = trained
    folder = trainer.save_model(tmp_path / "final")
    assert {"config.json", "eval_results.json", "mmoe_run.json", "README.md"} <= {p.name for p in folder.iterdir()}
    from transformers import AutoModelForSequenceClassification

    again = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert again.config.lora_r == 4


def test_wrong_inputs_are_refused_with_what_to_do(tiny_bert_dir, tmp_path):
    ds = DatasetDict({"train": Dataset.from_dict({"caption": ["x", "y"], "text": ["a", "b"], "label": [0, 1]})})
    args = MMoETrainingArguments(output_dir=str(tmp_path / "o"), report_to="none", text_template="{caption} | {text}")
    with pytest.raises(ArgumentsError, match="pass ds\\['train'\\]"):
        MMoETrainer(model=str(tiny_bert_dir), args=args, train_dataset=ds, eval_dataset=ds["train"])
    with pytest.raises(ArgumentsError, match="needs train_dataset and eval_dataset"):
        MMoETrainer(model=str(tiny_bert_dir), args=args, train_dataset=ds["train"])
    with pytest.raises(ArgumentsError, match="unknown model option"):
        MMoETrainer(model=str(tiny_bert_dir), args=args, train_dataset=ds["train"], eval_dataset=ds["train"],
                    model_init_kwargs={"lora_rank": 8})
    i2moe_args = MMoETrainingArguments(output_dir=str(tmp_path / "o"), report_to="none", method="i2moe")
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2)
    with pytest.raises(ArgumentsError, match="method='mmoe'"):
        MMoETrainer(model=model, args=i2moe_args, train_dataset=ds["train"], eval_dataset=ds["train"])
    with pytest.raises(RuntimeError, match="call .train\\(\\) first"):
        MMoETrainer(model=str(tiny_bert_dir), args=args, train_dataset=ds["train"],
                    eval_dataset=ds["train"]).predict(ds["train"])
