"""The mmoe-train pipeline end to end on a tiny backbone, plus its resumability, fallbacks and input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from safetensors.torch import load_file

from mmoe.losses import focal_loss
from mmoe.training import seeds
from mmoe.training.cli import parse_arguments, train
from mmoe.training.stages import baseline as baseline_stage
from mmoe.training.stages import common
from mmoe.training.stages import experts as experts_stage
from mmoe.training.stages import i2moe as i2moe_stage
from mmoe.training.stages import router as router_stage

TRAINING_STAGES = (baseline_stage, experts_stage, router_stage, i2moe_stage)
"""The stage modules that train a model through :func:`mmoe.training.stages.common.train_stage` (each imports it
by name, so a test that intercepts training patches it in every one of them)."""

BLOCK_KEYS = {"accuracy", "precision", "recall", "f1", "balanced_accuracy", "macro_f1"}


def _precomputed_dataset(
    folder: Path, n_train: int = 48, n_eval: int = 24, synergy: bool = True, gold: bool = False
) -> Path:
    """A small text dataset with unimodal predictions, so that no cross-fitting is needed; ``gold`` adds a
    ``gold_interaction`` column that differs from the categorization on every fifth row."""
    rng = np.random.default_rng(0)
    words = ["sunny", "snowy", "warm", "cold", "lovely", "awful"]

    def split(n: int) -> Dataset:
        labels = rng.integers(0, 2, n)
        # rows cycle through redundancy (both right), uniqueness (one right) and synergy (both wrong)
        kinds = np.arange(n) % (3 if synergy else 2)
        text_pred = np.where(kinds == 2, 1 - labels, labels)
        vision_pred = np.where(kinds >= 1, 1 - labels, labels)
        columns = {"gold_interaction": Value("string")} if gold else {}
        gold_kinds = (kinds + (np.arange(n) % 5 == 0)) % 3
        gold_column = {"gold_interaction": [("redundancy", "uniqueness", "synergy")[k] for k in gold_kinds]}
        return Dataset.from_dict(
            {
                **(gold_column if gold else {}),
                "id": [f"r{i}" for i in range(n)],
                "text": [" ".join(rng.choice(words, 4)) for _ in range(n)],
                "caption": [f"a photo of a {rng.choice(words)} day" for _ in range(n)],
                "label": labels.tolist(),
                "text_prediction": text_pred.tolist(),
                "vision_prediction": vision_pred.tolist(),
                "text_confidence": rng.uniform(0, 1, n).tolist(),
                "vision_confidence": rng.uniform(0, 1, n).tolist(),
            },
            features=Features(
                {
                    "id": Value("string"), "text": Value("string"), "caption": Value("string"),
                    "label": ClassLabel(names=["no", "yes"]), "text_prediction": Value("int64"),
                    "vision_prediction": Value("int64"), "text_confidence": Value("float64"),
                    "vision_confidence": Value("float64"), **columns,
                }
            ),
        )

    DatasetDict({"train": split(n_train), "validation": split(n_eval), "test": split(n_eval)}).save_to_disk(folder)
    return folder


def _tiny_args(backbone: Path, dataset: Path | str, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--backbone", str(backbone), "--dataset", str(dataset), "--output_dir", str(output_dir),
        "--text_template", "{caption} | {text}", "--max_length", "24", "--lora_r", "2", "--router_hidden_size", "8",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--num_train_epochs", "1",
        "--min_expert_examples", "4", "--logging_steps", "50", "--disable_tqdm", "true", *extra,
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_dir) -> tuple[Path, dict, list[str]]:
    root = tmp_path_factory.mktemp("pipeline")
    data = _precomputed_dataset(root / "data", gold=True)
    args = _tiny_args(tiny_bert_dir, data, root / "out")
    results = train(args)
    return root / "out", results, args


def test_every_stage_runs_and_writes_its_files(finished_run):
    out, results, _ = finished_run
    for stage in ("categorize", "baseline", "experts", "router"):
        assert (out / stage / "stage_complete.json").exists(), stage
    assert (out / "categorize" / "dataset" / "dataset_dict.json").exists()
    assert (out / "baseline" / "baseline.safetensors").exists()
    for expert in ("redundancy", "uniqueness", "synergy"):
        assert (out / "experts" / f"{expert}.safetensors").exists()
    for name in ("config.json", "model.safetensors", "modeling_mmoe.py", "eval_results.json", "mmoe_run.json",
                 "README.md", "tokenizer_config.json"):
        assert (out / name).exists(), name


def test_eval_results_follow_the_schema(finished_run):
    out, results, _ = finished_run
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["split"] == "test"
    assert set(saved["baseline"]) == BLOCK_KEYS and set(saved["mmoe"]) == BLOCK_KEYS
    assert set(saved["fusion"]) == {"average", "max", "prior", "router", "oracle"}
    for block in saved["fusion"].values():
        assert set(block) == BLOCK_KEYS and all(0.0 <= v <= 1.0 for v in block.values())
    for model_name in ("baseline", "mmoe"):
        assert set(saved["by_interaction"][model_name]) == {"redundancy", "uniqueness", "synergy"}
    assert saved["interaction_counts"]["train"] == {"redundancy": 16, "uniqueness": 16, "synergy": 16}
    assert isinstance(saved["ce_moe"], float) and isinstance(saved["ce_baseline"], float)


def _reloaded_outputs(out: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The saved folder, reloaded with remote code and run over the evaluation split with the pipeline's collator
    (template and length of :func:`_tiny_args`): ``logits``, ``expert_logits``, ``router_weights`` and the labels."""
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mmoe.data.collators import MMoECollator

    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    split = load_from_disk(str(out / "categorize" / "dataset"))["test"]
    collator = MMoECollator(AutoTokenizer.from_pretrained(out), text_template="{caption} | {text}", max_length=24)
    rows = [split[i] for i in range(len(split))]
    outputs: dict[str, list[np.ndarray]] = {"logits": [], "expert_logits": [], "router_weights": []}
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = {k: v for k, v in collator(rows[start : start + 8]).items() if k != "labels"}
            output = model(**batch)
            for name in outputs:
                outputs[name].append(getattr(output, name).float().numpy())
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.asarray(split["label"])


def test_ce_moe_is_the_per_row_best_expert_and_beats_every_expert(finished_run):
    """CE_moe takes the best expert per example, so it cannot exceed the mean CE of any single expert; recomputed
    here with numpy from the reloaded model's expert logits."""
    out, _, _ = finished_run
    saved = json.loads((out / "eval_results.json").read_text())
    outputs, labels = _reloaded_outputs(out)
    logits = outputs["expert_logits"].astype(np.float64)  # [N, E, C]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    per_expert = -log_probs[np.arange(len(labels)), :, labels]  # [N, E]
    assert per_expert.shape == (24, 3)
    assert saved["ce_moe"] <= per_expert.mean(axis=0).min() + 1e-6
    assert saved["ce_moe"] == pytest.approx(per_expert.min(axis=1).mean(), abs=1e-4)


def test_mmoe_scores_match_the_reloaded_model(finished_run):
    """The reported MMoE accuracy/F1 are those of the saved model's own (router-fused) predictions."""
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (a dev extra) recomputes the scores")
    accuracy_score, f1_score = metrics.accuracy_score, metrics.f1_score

    out, _, _ = finished_run
    saved = json.loads((out / "eval_results.json").read_text())
    outputs, labels = _reloaded_outputs(out)
    predictions = outputs["logits"].argmax(-1)
    assert saved["mmoe"]["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-6)
    assert saved["mmoe"]["f1"] == pytest.approx(f1_score(labels, predictions, zero_division=0), abs=1e-6)
    average = outputs["expert_logits"]
    average = np.exp(average - average.max(-1, keepdims=True))
    average = (average / average.sum(-1, keepdims=True)).mean(axis=1).argmax(-1)
    assert saved["fusion"]["average"]["accuracy"] == pytest.approx(accuracy_score(labels, average), abs=1e-6)


def test_gold_type_blocks_match_the_reloaded_model(finished_run):
    """Each expert alone and the oracle (each row to the expert of its categorized interaction), scored on the rows
    of each gold interaction type, recomputed from the reloaded model's expert logits."""
    from datasets import load_from_disk

    out, _, _ = finished_run
    saved = json.loads((out / "eval_results.json").read_text())
    split = load_from_disk(str(out / "categorize" / "dataset"))["test"]
    outputs, labels = _reloaded_outputs(out)
    experts = json.loads((out / "config.json").read_text())["experts"]
    expert_predictions = outputs["expert_logits"].argmax(-1)  # [N, E]
    gold, categorized = np.asarray(split["gold_interaction"]), np.asarray(split["interaction"])
    oracle = expert_predictions[np.arange(len(labels)), [experts.index(c) for c in categorized]]
    for group in sorted(set(gold)):
        rows = gold == group
        assert saved["by_gold_interaction"]["oracle"][group]["accuracy"] == pytest.approx(
            (oracle[rows] == labels[rows]).mean(), abs=1e-6
        )
        for e, expert in enumerate(experts):
            assert saved["experts_by_gold_interaction"][expert][group]["accuracy"] == pytest.approx(
                (expert_predictions[rows, e] == labels[rows]).mean(), abs=1e-6
            )


def test_card_metadata_omits_license_and_language_nobody_stated(finished_run):
    from huggingface_hub import ModelCard

    out, _, _ = finished_run
    metadata = ModelCard.load(out / "README.md").data.to_dict()
    assert "license" not in metadata and "language" not in metadata
    run = json.loads((out / "mmoe_run.json").read_text())
    assert "license" not in run and "language" not in run


def test_saved_model_reloads_with_remote_code(finished_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _, _ = finished_run
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(**tokenizer(["a photo of a snowy day | lovely warm"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    assert model.config.prior_weights == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_second_run_skips_finished_stages(finished_run, monkeypatch):
    out, results, args = finished_run
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.safetensors")}

    def no_training(*_, **__):
        raise AssertionError("a finished stage was trained again")

    for module in TRAINING_STAGES:
        monkeypatch.setattr(module, "train_stage", no_training)
    again = train(args)
    assert again["mmoe"] == results["mmoe"]
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("*/*.safetensors")}


def test_experts_start_from_the_baseline(tmp_path, tiny_bert_dir, monkeypatch):
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    starts: dict[str, dict[str, torch.Tensor]] = {}
    original = common.train_stage

    def recording(ctx, model, name, *rest, **kw):
        expert = name.removeprefix("experts/")  # an expert's run is named experts/<expert>
        if expert in model.experts and expert != "baseline":
            starts[expert] = model.expert_state_dict(expert)
        return original(ctx, model, name, *rest, **kw)

    monkeypatch.setattr(experts_stage, "train_stage", recording)
    train(_tiny_args(tiny_bert_dir, data, out, "--num_train_epochs", "1"))
    baseline = load_file(str(out / "baseline" / "baseline.safetensors"))
    assert set(starts) == {"redundancy", "uniqueness", "synergy"}
    nonzero_b = [k for k in baseline if "lora_B" in k and baseline[k].abs().sum() > 0]
    assert nonzero_b, "the baseline's LoRA B matrices should have moved away from zero"
    for expert, state in starts.items():
        assert state.keys() == baseline.keys()
        for key in baseline:
            assert torch.equal(state[key], baseline[key]), (expert, key)
    trained = load_file(str(out / "experts" / "synergy.safetensors"))
    assert any(not torch.equal(trained[k], baseline[k]) for k in baseline)


def test_focal_loss_equals_the_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    targets = torch.tensor([0, 2])
    p = torch.softmax(logits, -1)[torch.arange(2), targets]
    expected = ((1 - p) ** 2 * -torch.log(p)).mean()
    torch.testing.assert_close(focal_loss(logits, targets, gamma=2.0, alpha=1.0), expected)
    # alpha scales, gamma=0 is cross-entropy
    torch.testing.assert_close(focal_loss(logits, targets, gamma=0.0, alpha=0.5),
                               0.5 * torch.nn.functional.cross_entropy(logits, targets))
    # hand-computed value for one example: p = 0.5 -> (0.5)^2 * ln 2
    torch.testing.assert_close(focal_loss(torch.zeros(1, 2), torch.tensor([1])), torch.tensor(0.25 * np.log(2)),
                               check_dtype=False)


def test_no_synergy_rows_fall_back_to_the_baseline(tmp_path, tiny_bert_dir, caplog):
    data = _precomputed_dataset(tmp_path / "data", synergy=False)
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="mmoe"):
        results = train(_tiny_args(tiny_bert_dir, data, out))
    assert "synergy" in caplog.text and "keeps the baseline" in caplog.text
    summary = json.loads((out / "experts" / "stage_complete.json").read_text())["summary"]
    assert summary["synergy"] == {"fallback": "baseline", "train_rows": 0}
    baseline = load_file(str(out / "baseline" / "baseline.safetensors"))
    synergy = load_file(str(out / "experts" / "synergy.safetensors"))
    assert all(torch.equal(baseline[k], synergy[k]) for k in baseline)
    assert "synergy" not in results["by_interaction"]["mmoe"]


def test_labels_outside_the_label_set_fail_early(tmp_path, tiny_bert_dir):
    folder = _precomputed_dataset(tmp_path / "data")
    bad = DatasetDict.load_from_disk(folder)
    bad["validation"] = bad["validation"].cast_column("label", Value("int64")).map(
        lambda r, i: {"label": 7 if i == 0 else r["label"]}, with_indices=True
    )
    bad["train"] = bad["train"].cast_column("label", Value("int64"))
    bad["test"] = bad["test"].cast_column("label", Value("int64"))
    bad.save_to_disk(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"labels \[7\] are outside"):
        train(_tiny_args(tiny_bert_dir, tmp_path / "bad", tmp_path / "out", "--num_labels", "2"))
    assert not (tmp_path / "out" / "baseline").exists()


def test_missing_columns_fail_early(tmp_path, tiny_bert_dir):
    data = _precomputed_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['context'\]"):
        train(_tiny_args(tiny_bert_dir, data, tmp_path / "out", "--text_template", "{context} {text}"))
    with pytest.raises(ValueError, match="neither"):
        train(_tiny_args(tiny_bert_dir, tmp_path / "nowhere", tmp_path / "out"))


def test_cli_options_parse_from_flags_yaml_and_presets(tmp_path):
    model_args, data_args, training_args = parse_arguments(["--preset", "demo", "--lora_r", "4", "--seeds", "0", "1"])
    assert model_args.lora_r == 4 and data_args.dataset == "synthetic" and training_args.seeds == [0, 1]
    assert training_args.output_dir == "outputs/mmoe-demo"
    config = tmp_path / "run.yaml"
    config.write_text("backbone: some/model\nlora_alpha: 8\nmax_steps: 3\noutput_dir: here\n")
    model_args, _, training_args = parse_arguments([str(config)])
    assert model_args.backbone == "some/model" and model_args.lora_alpha == 8 and training_args.max_steps == 3


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    text = capsys.readouterr().out
    for flag in ("--backbone", "--dataset", "--data_dir", "--lora_r", "--router_hidden_size", "--seeds",
                 "--max_steps", "--selection_metric", "--unimodal_source", "--push_to_hub", "--preset"):
        assert flag in text, flag


def test_seeds_report_mean_and_std():
    def block(accuracy: float, f1: float) -> dict[str, float]:
        return {"accuracy": accuracy, "precision": 0.5, "recall": 0.5, "f1": f1}

    runs = [
        {"mmoe": block(0.6, 0.5), "split": "test", "ce_moe": 0.2, "interaction_counts": {"train": {"synergy": 4}}},
        {"mmoe": block(0.8, 0.7), "split": "test", "ce_moe": 0.4, "interaction_counts": {"train": {"synergy": 4}}},
    ]
    combined = seeds.aggregate_seeds(runs)
    assert combined["mmoe"]["f1"] == pytest.approx(0.6) and combined["mmoe"]["f1_std"] == pytest.approx(0.1)
    assert combined["mmoe"]["accuracy_std"] == pytest.approx(0.1) and combined["mmoe"]["precision_std"] == 0.0
    assert combined["ce_moe"] == pytest.approx(0.3) and combined["ce_moe_std"] == pytest.approx(0.1)
    assert combined["interaction_counts"] == {"train": {"synergy": 4}}  # counts: no spread, still integers
    assert combined["split"] == "test"


def test_two_seeds_keep_the_best_validation_seed_at_the_root(tmp_path, tiny_bert_dir):
    """With --seeds the root holds the weights of the seed with the best validation score of the mixture (ties:
    the lowest seed), says so in eval_results.json, mmoe_run.json and the card, next to the mean ± std; the card's
    license and language are the ones passed."""
    from huggingface_hub import ModelCard

    data = _precomputed_dataset(tmp_path / "data", n_train=24, n_eval=12)
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, data, out, "--seeds", "3", "1", "--license", "mit", "--language", "en"))
    per_seed = {s: json.loads((out / f"seed-{s}" / "eval_results.json").read_text()) for s in (3, 1)}
    scores = {s: r["validation"]["mmoe"]["macro_f1"] for s, r in per_seed.items()}  # the default selection metric
    expected = min(scores, key=lambda s: (-scores[s], s))
    saved = json.loads((out / "eval_results.json").read_text())
    run = json.loads((out / "mmoe_run.json").read_text())
    assert saved["root_seed"] == run["root_seed"] == expected
    assert saved["root_seed_reason"] == run["root_seed_reason"] and "validation macro_f1" in saved["root_seed_reason"]
    root_weights = load_file(str(out / "model.safetensors"))
    seed_weights = load_file(str(out / f"seed-{expected}" / "model.safetensors"))
    assert root_weights.keys() == seed_weights.keys()
    assert all(torch.equal(root_weights[k], seed_weights[k]) for k in root_weights)
    assert saved["mmoe"]["f1"] == pytest.approx(np.mean([r["mmoe"]["f1"] for r in per_seed.values()]))
    card = ModelCard.load(out / "README.md")
    assert f"The weights in this repository are those of **seed {expected}**" in card.text
    assert "mean ± standard deviation over 2 seeds (3, 1)" in card.text
    assert card.data.license == "mit" and card.data.language == "en"
    assert "license: mit" in card.content and "language: en" in card.content


def test_root_seed_is_the_best_validation_score_ties_to_the_lowest_seed():
    def run(f1):
        return {"validation": {"mmoe": {"f1": f1, "accuracy": 0.5}}}

    assert seeds.choose_root_seed([0, 1, 2], [run(0.4), run(0.7), run(0.6)], "f1")[0] == 1
    assert seeds.choose_root_seed([5, 2, 9], [run(0.7), run(0.7), run(0.6)], "f1")[0] == 2
    seed, reason = seeds.choose_root_seed([0, 1], [run(0.1), run(0.2)], "accuracy")
    assert seed == 0 and "validation accuracy" in reason and "lowest seed" in reason


def test_model_push_to_hub_sends_weights_card_and_tokenizer_in_one_commit(finished_run, captured_hub):
    from transformers import AutoModelForSequenceClassification

    from mmoe.hub_cards import files_to_upload

    out, _, _ = finished_run
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    model.push_to_hub("org/mmoe-tiny", private=True)
    assert len(captured_hub["create_commit"]) == 1
    assert captured_hub["create_repo"][0]["private"] is True
    sent = {op.path_in_repo for op in captured_hub["create_commit"][0]["operations"]}
    expected = {"config.json", "model.safetensors", "modeling_mmoe.py", "configuration_mmoe.py", "fusion.py",
                "backbone_utils.py", "losses.py", "README.md", "eval_results.json", "mmoe_run.json",
                "tokenizer_config.json", "tokenizer.json", "interaction_f1.png", "router_weights.png"}
    assert expected <= sent, expected - sent
    assert not any("/" in name for name in sent)  # stage folders stay local
    assert sent == set(files_to_upload(out))  # what mmoe-card --push_to_hub sends
    assert "generated by mmoe.hub_cards" in captured_hub["create_commit"][0]["cards"][0]  # the run's own card


def test_single_class_validation_subset_selects_by_accuracy(caplog):
    from types import SimpleNamespace

    ctx = SimpleNamespace(args=SimpleNamespace(selection_metric="f1", label_column="label"))
    one_class = Dataset.from_dict({"label": [1, 1, 1]})
    two_classes = Dataset.from_dict({"label": [0, 1, 1]})
    with caplog.at_level("WARNING", logger="mmoe"):
        assert common.selection_metric(ctx, "synergy", one_class) == "accuracy"
    assert "single class" in caplog.text
    assert common.selection_metric(ctx, "synergy", two_classes) == "f1"
    assert common.selection_metric(ctx, "synergy", None) == "f1"


def test_confidence_filter_and_rebalancing_choose_the_expert_rows(tmp_path, tiny_bert_dir):
    """Refinements touch only which training rows train the experts, exactly as categorize_splits refines them."""
    from mmoe.training.categorize import categorize_splits, interaction_counts

    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, data, out, "--min_confidence", "0.3", "--min_minority_fraction", "0.4"))
    expected = categorize_splits(
        DatasetDict.load_from_disk(data), min_confidence=0.3, min_minority_fraction=0.4,
        text_confidence_column="text_confidence", vision_confidence_column="vision_confidence",
    )
    counts = json.loads((out / "categorize" / "stage_complete.json").read_text())["summary"]["interaction_counts"]
    assert counts["train_experts"] == interaction_counts(expected["train"])
    assert sum(counts["train_experts"].values()) < 48  # something was dropped
    assert counts["train"] == {"redundancy": 16, "uniqueness": 16, "synergy": 16}  # every row keeps its category
    assert counts["test"] == interaction_counts(expected["test"])  # evaluation splits untouched


def test_router_mixture_objective_is_the_fused_nll():
    """The router's objectives, as the router stage trains them (``train_router`` + cached ``router_inputs`` /
    ``expert_logits``): the mixture objective's loss is -log(sum_i w_i softmax(f_i)[y]) and the interaction
    objective's is the focal loss of the router's scores, both computed here by hand with numpy."""
    from mmoe import MMoEConfig, MMoEForSequenceClassification
    from mmoe.testing import tiny_backbone_config

    def model(objective: str) -> MMoEForSequenceClassification:
        torch.manual_seed(0)
        config = MMoEConfig(backbone_config=tiny_backbone_config("bert"), num_labels=2, router_hidden_size=0,
                            router_input="backbone", router_objective=objective, router_focal_gamma=2.0,
                            router_focal_alpha=0.5)
        return MMoEForSequenceClassification(config).train_router().eval()  # eval: no router dropout

    mixture = model("mixture")
    linear = mixture.router.net[-1]  # router_hidden_size=0: one linear layer from the features to the scores
    width = linear.in_features
    torch.manual_seed(1)
    features, expert_logits = torch.randn(5, width), torch.randn(5, 3, 2)
    labels = torch.tensor([0, 1, 1, 0, 1])
    out = mixture(router_inputs=features, expert_logits=expert_logits, labels=labels)
    scores = features.numpy() @ linear.weight.detach().numpy().T + linear.bias.detach().numpy()
    w = np.exp(scores - scores.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    p = np.exp(expert_logits.numpy())
    p /= p.sum(2, keepdims=True)
    fused = (w[:, :, None] * p).sum(1)
    expected = -np.log(fused[np.arange(5), labels.numpy()]).mean()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(out.logits.exp().detach().numpy(), fused, rtol=1e-5)
    np.testing.assert_allclose(out.router_weights.detach().numpy(), w, rtol=1e-5)

    interaction = model("interaction")
    linear = interaction.router.net[-1]
    targets = torch.tensor([0, 1, 2, 0, 1])
    out = interaction(router_inputs=features, interaction_labels=targets)
    assert out.router_logits.shape == (5, 3)
    scores = features.numpy() @ linear.weight.detach().numpy().T + linear.bias.detach().numpy()
    q = np.exp(scores - scores.max(1, keepdims=True))
    q = (q / q.sum(1, keepdims=True))[np.arange(5), targets.numpy()]
    assert out.loss.item() == pytest.approx((0.5 * (1 - q) ** 2 * -np.log(q)).mean(), rel=1e-5)


def test_router_mixture_objective_end_to_end(tmp_path, tiny_bert_dir):
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    results = train(_tiny_args(tiny_bert_dir, data, out, "--router_objective", "mixture"))
    router = json.loads((out / "router" / "stage_complete.json").read_text())["summary"]
    assert router["selection_metric"] == "macro_f1"
    assert router["validation"]["predicted_classes"] <= 2  # scored on the 2 label classes, not the 3 interactions
    assert np.isfinite(results["ce_moe"]) and set(results["mmoe"]) >= BLOCK_KEYS
    card = (out / "README.md").read_text()  # the card describes the router that was trained
    assert "trained for the fused prediction itself" in card
    assert "reading the pooled state of a LoRA adapter of its own" in card
    assert "focal loss" not in card.split("## Training procedure")[1].split("###")[0]


def test_small_experts_train_enough_steps():
    """--expert_min_steps raises a small subset's epochs (whole epochs) until it takes that many optimizer steps;
    the figures are worked out by hand: 199 rows at batch 32 are 7 steps per epoch, so 60 steps need 9 epochs."""
    from types import SimpleNamespace

    from mmoe.training.stages.experts import expert_epochs

    def epochs(rows: int, min_steps: int, expert_epochs_option: float | None = 3.0, accumulation: int = 1) -> float:
        args = SimpleNamespace(expert_num_train_epochs=expert_epochs_option, num_train_epochs=5.0, world_size=1,
                               per_device_train_batch_size=32, gradient_accumulation_steps=accumulation,
                               expert_min_steps=min_steps)
        return expert_epochs(SimpleNamespace(args=args), rows)

    assert epochs(199, 60) == 9.0
    assert epochs(663, 60) == 3.0  # 21 steps per epoch: 63 steps already
    assert epochs(199, 0) == 3.0 and epochs(199, 0, expert_epochs_option=None) == 5.0
    assert epochs(199, 60, accumulation=2) == 15.0  # 4 optimizer steps per epoch
