"""The model card of an I2MoE run (``--method i2moe``): it names I2MoE everywhere, shows the expert weights (plot,
table, agreement) with the numbers of ``eval_results.json``, has a usage snippet that runs, and leaves the MMoE card
as it was.

The I2MoE output folder is built by hand but faithfully: a saved tiny I2MoE model, and ``eval_results.json`` from the
trainer's own :func:`~mmoe.training.evaluation.evaluate_i2moe` (and :func:`~mmoe.training.seeds.aggregate_seeds`
for several seeds) over fixed model outputs, so a change of the results' schema reaches these tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from huggingface_hub import ModelCard

from mmoe import I2MoEForSequenceClassification
from mmoe.data.modalities import ModalityCollator
from mmoe.hub_cards import ROUTER_WEIGHTS_PLOT, MMoEModelCardData, files_to_upload, write_model_card
from mmoe.hub_cards.formatting import METRIC_LABELS, expert_weight_groups
from mmoe.hub_cards.plots import EXPERT_WEIGHTS_PLOT, INTERACTION_F1_PLOT, PLOT_FILES, plot_expert_weights
from mmoe.testing import save_tiny_backbone
from mmoe.training.evaluation import evaluate_i2moe
from mmoe.training.seeds import aggregate_seeds, choose_root_seed

MODALITIES = ["caption", "text"]
EXPERTS = ["uniqueness_caption", "uniqueness_text", "synergy", "redundancy"]
INTERACTIONS = ["redundancy", "uniqueness", "synergy"]
RUN = {
    "backbone": "tiny-bert",
    "dataset": "synthetic",
    "dataset_id": None,
    "seeds": [42],
    "hyperparameters": {
        "learning_rate": 5e-4,
        "router_learning_rate": 1e-3,
        "router_input": "experts",
        "router_objective": "mixture",
        "router_focal_gamma": 2.0,
        "max_length": 128,
        "text_template": "{caption} | {text}",
    },
    "language": "en",
}
N = 30


def _dataset() -> DatasetDict:
    rng = np.random.default_rng(0)

    def split(n: int, gold: bool) -> Dataset:
        columns = {
            "caption": [f"caption {i}" for i in range(n)],
            "text": [f"text {i}" for i in range(n)],
            "label": rng.integers(0, 2, n).tolist(),
            "interaction": [INTERACTIONS[i % 3] for i in range(n)],
        }
        if gold:
            columns["gold_interaction"] = [INTERACTIONS[(i // 2) % 3] for i in range(n)]
        return Dataset.from_dict(columns)

    return DatasetDict(train=split(40, False), validation=split(N, False), test=split(N, True))


def _eval_results(seed: int, dataset: DatasetDict) -> dict[str, Any]:
    """What MMoETrainer writes for an I2MoE run whose model produced these (random, fixed) outputs."""
    rng = np.random.default_rng(seed)
    expert_logits = rng.normal(size=(N, len(EXPERTS), 2)).astype(np.float32)
    scores = rng.normal(size=(N, len(EXPERTS)))
    weights = (np.exp(scores) / np.exp(scores).sum(1, keepdims=True)).astype(np.float32)
    logits = (weights[..., None] * expert_logits).sum(1)
    i2moe_out = {"logits": logits, "expert_logits": expert_logits, "expert_weights": weights}
    base_out = {"logits": rng.normal(size=(N, 2)).astype(np.float32)}
    results = evaluate_i2moe(i2moe_out, base_out, dataset, "test", "label", EXPERTS, 2)
    results["validation"] = {"mmoe": dict(results["mmoe"])}
    return json.loads(json.dumps(results))  # as read back from eval_results.json


def _write_folder(folder: Path, backbone: Path, results: dict[str, Any], run: dict[str, Any] = RUN) -> Path:
    torch.manual_seed(0)
    model = I2MoEForSequenceClassification.from_backbone(
        str(backbone), num_labels=2, id2label={0: "not_sarcastic", 1: "sarcastic"}, modalities=MODALITIES,
        lora_r=4, lora_alpha=8,
    )
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
    (folder / "eval_results.json").write_text(json.dumps(results, indent=2))
    (folder / "mmoe_run.json").write_text(json.dumps(run, indent=2))
    return folder


@pytest.fixture(scope="module")
def i2moe_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("i2moe_card")
    backbone = save_tiny_backbone(root / "backbone", "bert")
    dataset = _dataset()
    results = _eval_results(0, dataset)
    folder = _write_folder(root / "output", backbone, results)
    card = write_model_card(folder)

    # Two seeds, as MMoETrainer writes the root: the mean over seeds and the chosen seed's reason.
    per_seed = [_eval_results(0, dataset), _eval_results(1, dataset)]
    aggregated = aggregate_seeds(per_seed)
    aggregated["seeds"] = [0, 1]
    aggregated["root_seed"], aggregated["root_seed_reason"] = choose_root_seed([0, 1], per_seed, "macro_f1")
    seeds_folder = _write_folder(root / "seeds", backbone, aggregated, {**RUN, "seeds": [0, 1]})
    seeds_card = write_model_card(seeds_folder)
    return {"folder": folder, "card": card, "results": results, "seeds_folder": seeds_folder,
            "seeds_card": seeds_card, "seeds_results": aggregated, "backbone": backbone}


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start): text.index(end, text.index(start))]


def _table(text: str, first_header: str) -> list[list[str]]:
    """The rows (cells) of the Markdown table whose header starts with ``| first_header |``."""
    lines = text[text.index(f"| {first_header} |"):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


# ------------------------------------------------------------------ naming the method
def test_the_i2moe_card_names_i2moe_everywhere(i2moe_run: dict[str, Any]) -> None:
    card = ModelCard.load(i2moe_run["folder"] / "README.md")
    metadata = card.data.to_dict()
    assert metadata["model-index"][0]["name"] == card.data.model_name == "I2MoE (bert) on synthetic"
    assert card.text.startswith("<!--") and "\n# I2MoE (bert) on synthetic\n" in card.text
    assert {"i2moe", "mmoe", "mixture-of-experts"} <= set(metadata["tags"])  # mmoe: the library's name

    # model-index: I2MoE and its baseline only, each metric named by its system (no `config`); values are
    # eval_results.json's. The experts alone are ablations: the card's body shows them.
    names = {(r.metric_name, r.metric_type) for r in card.data.eval_results}
    assert ("I2MoE Accuracy", "accuracy") in names and ("I2MoE Macro-F1", "macro_f1") in names
    results = i2moe_run["results"]
    assert names == {(f"{system} {label}", metric) for key, system in (("mmoe", "I2MoE"),
                                                                      ("baseline", "Baseline (single model)"))
                     for metric, label in METRIC_LABELS.items() if metric in results[key]}
    assert {r.metric_config for r in card.data.eval_results} == {None}
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values["I2MoE F1"] == results["mmoe"]["f1"]
    assert values["Baseline (single model) F1"] == results["baseline"]["f1"]
    experts_alone = _section(card.text, "### Each expert alone", "\n## ")
    for expert in EXPERTS:
        accuracy = f"{results['expert_scores'][expert]['accuracy']:.4f}"
        assert f"| Expert alone: {expert} | {accuracy}" in experts_alone.replace("**", "")


def test_the_i2moe_card_has_no_mmoe_router_text(i2moe_run: dict[str, Any]) -> None:
    text = i2moe_run["card"].text
    body = text[: text.index("## Citation")]  # the citations list the MMoE paper too, on purpose
    description = _section(text, "# I2MoE", "## Model details")
    assert "**I2MoE**" in description and "Xin et al., ICML 2025" in description and "2505.19190" in description
    assert "MMoE" not in description and "router" not in description.lower()
    assert "λ = 0.01" in description and "temperature 1.0" in description
    for wording in ("MMoE (router fusion)", "router", "Router", "fusion", "CE<sub>moe</sub>", "oracle"):
        assert wording not in body, wording
    assert "| Reweighting | MLP, hidden size 256" in body and "| Modalities | `caption`, `text` |" in body
    assert "| Interaction loss weight λ | 0.01 |" in body
    assert "| I2MoE | " in body and "I2MoE accuracy | I2MoE F1" in body and "I2MoE − baseline F1" in body
    assert "| learning_rate | 0.0005 |" in body and "router_" not in body  # MMoE-only options left out
    assert text.index("**I2MoE (Xin et al., ICML 2025)**") < text.index("**MMoE (Yu et al., EMNLP 2024)**")


# ------------------------------------------------------------------ the expert weights
def test_the_weights_plot_is_written_published_and_embedded(i2moe_run: dict[str, Any]) -> None:
    folder, text = i2moe_run["folder"], i2moe_run["card"].text
    assert (folder / EXPERT_WEIGHTS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({EXPERT_WEIGHTS_PLOT})" in text and EXPERT_WEIGHTS_PLOT in PLOT_FILES
    assert f"]({INTERACTION_F1_PLOT})" in text
    assert not (folder / ROUTER_WEIGHTS_PLOT).exists() and ROUTER_WEIGHTS_PLOT not in text
    assert EXPERT_WEIGHTS_PLOT in files_to_upload(folder)  # the publish allowlist covers it (*.png)


def test_the_weights_table_is_eval_results_numbers(i2moe_run: dict[str, Any]) -> None:
    interpretation = i2moe_run["results"]["interpretation"]
    rows = _table(i2moe_run["card"].text, "gold interaction")
    expected = [["**all**", str(N)] + [f"{interpretation['mean_weights'][e]:.3f}" for e in EXPERTS]]
    confusion = i2moe_run["results"]["categorization"]["confusion"]
    for gold in INTERACTIONS:  # gold types, in the card's order
        weights = interpretation["weights_by_gold_interaction"][gold]
        expected.append([gold, str(sum(confusion[gold].values()))] + [f"{weights[e]:.3f}" for e in EXPERTS])
    assert rows == expected
    # The plot draws the same numbers.
    groups = expert_weight_groups(i2moe_run["results"], EXPERTS)
    assert groups["grouping"] == "gold" and list(groups["groups"]) == ["all", *INTERACTIONS]
    assert groups["groups"]["synergy"] == interpretation["weights_by_gold_interaction"]["synergy"]


def test_the_agreement_figures_are_shown(i2moe_run: dict[str, Any]) -> None:
    interpretation, text = i2moe_run["results"]["interpretation"], i2moe_run["card"].text
    assert interpretation["disagreement_rows"] > 0  # the fixture's experts do disagree
    assert f"all agree on **{100 * interpretation['all_agree_rate']:.1f} %** of the test examples" in text
    assert f"they disagree on {interpretation['disagreement_rows']}." in text
    assert f"where the experts disagree: **{100 * interpretation['accuracy_when_experts_disagree']:.1f} %**" in text
    pair, rate = next(iter(interpretation["pairwise_agreement"].items()))
    assert f"{pair.replace('|', ' / ')} {100 * rate:.1f} %" in text
    answer = "yes" if interpretation["synergy_weight_highest_on_gold_synergy"] else "no"
    assert f"weight highest on the gold synergy examples: **{answer}**" in text
    synergy = interpretation["weights_by_gold_interaction"]["synergy"]["synergy"]
    assert f"({synergy:.3f} there, " in text


def test_the_card_of_several_seeds(i2moe_run: dict[str, Any]) -> None:
    results, text = i2moe_run["seeds_results"], i2moe_run["seeds_card"].text
    assert "2 seeds (0, 1)" in text and "(means over 2 seeds)" in text
    assert "router fusion" not in text and "chosen by highest validation macro_f1 of I2MoE (reweighted experts)" in text
    rows = _table(text, "gold interaction")
    assert rows[0][2:] == [f"{results['interpretation']['mean_weights'][e]:.3f}" for e in EXPERTS]
    assert "± " in _section(text, "| System |", "\n\n")  # metric spreads over seeds
    # The synergy verdict is judged on the mean weights the table shows (the per-seed flag is not averaged).
    by_gold = results["interpretation"]["weights_by_gold_interaction"]
    highest = by_gold["synergy"]["synergy"] > max(w["synergy"] for g, w in by_gold.items() if g != "synergy")
    assert f"gold synergy examples: **{'yes' if highest else 'no'}**" in text
    assert (i2moe_run["seeds_folder"] / EXPERT_WEIGHTS_PLOT).exists()


def test_weights_without_gold_types_group_by_categorized_interaction(tmp_path: Path) -> None:
    results = _eval_results(0, _dataset())
    results["interpretation"].pop("weights_by_gold_interaction")
    results["interpretation"].pop("synergy_weight_highest_on_gold_synergy")
    groups = expert_weight_groups(results, EXPERTS)
    assert groups["grouping"] == "categorized"
    assert groups["counts"] == {"all": N, **{c: N // 3 for c in INTERACTIONS}}
    assert plot_expert_weights(results, tmp_path / "w.png") and (tmp_path / "w.png").exists()
    data = MMoEModelCardData(config={"model_type": "i2moe", "experts": EXPERTS, "modalities": MODALITIES},
                             eval_results=results)
    from mmoe.hub_cards.context import template_context

    context = template_context(data)
    assert context["expert_weights"]["header"][0] == "interaction" and context["synergy_check"] is None
    assert not plot_expert_weights({"split": "test"}, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_the_method_comes_from_the_config_without_results(tmp_path: Path) -> None:
    """A partial I2MoE folder (no eval_results.json yet) is still described as I2MoE."""
    config = {"model_type": "i2moe", "modalities": ["caption", "context", "text"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    card = write_model_card(tmp_path)
    assert "\n# I2MoE (backbone)\n" in card.text and "i2moe" in card.data.tags
    experts = "`uniqueness_caption`, `uniqueness_context`, `uniqueness_text`, `synergy`, `redundancy`"
    assert f"n + 2 = 5 LoRA experts ({experts})" in card.text
    assert "router" not in card.text[: card.text.index("## Citation")].lower()


# ------------------------------------------------------------------ the usage snippet runs
def test_the_usage_snippets_run(i2moe_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    folder, text = i2moe_run["folder"], i2moe_run["card"].text
    usage = _section(text, "## Usage", "## Training data")
    assert "trust_remote_code=True" in usage and "modality_ids" in usage and "model.explain(**batch)" in usage
    main, by_hand = re.findall(r"```python\n(.*?)```", usage, flags=re.S)
    assert "from mmoe.data.modalities import ModalityCollator" in main
    namespace: dict[str, Any] = {}
    exec(main.replace("your-org/your-mmoe-model", str(folder)), namespace)  # noqa: S102
    explanation, batch = namespace["explanation"], namespace["batch"]
    assert explanation["experts"] == EXPERTS and explanation["expert_weights"].shape == (1, len(EXPERTS))
    torch.testing.assert_close(explanation["expert_weights"].sum(-1), torch.ones(1))
    printed = capsys.readouterr().out
    assert all(f"{expert}: weight " in printed for expert in EXPERTS)

    exec(by_hand, namespace)  # noqa: S102  (reuses the tokenizer, model and row of the first snippet)
    collator = ModalityCollator(tokenizer=namespace["tokenizer"], text_template="{caption} | {text}",
                                modalities=MODALITIES, max_length=128)
    assert torch.equal(namespace["batch"]["modality_ids"], collator([namespace["row"]])["modality_ids"])
    assert torch.equal(namespace["batch"]["modality_ids"], batch["modality_ids"])


# ------------------------------------------------------------------ the MMoE card is unchanged
def test_the_mmoe_card_keeps_its_router_text(tmp_path: Path) -> None:
    from test_hub_cards import RUN as MMOE_RUN
    from test_hub_cards import eval_results_fixture

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "mmoe", "backbone_config": {"model_type": "bert"}, "router_hidden_size": 256, "fusion": "router",
    }))
    (tmp_path / "eval_results.json").write_text(json.dumps(eval_results_fixture()))
    (tmp_path / "mmoe_run.json").write_text(json.dumps(MMOE_RUN))
    card = write_model_card(tmp_path)
    text = card.text
    assert "\n# MMoE (all-MiniLM-L6-v2) on MUStARD\n" in text and "i2moe" not in card.data.tags
    assert "This is an **MMoE** model" in text and "A router reads the input" in text
    assert "| Router | MLP, hidden size 256 reading" in text and "4. **Router**: an interaction classifier" in text
    assert "| Fusion: router |" in text and "CE<sub>moe</sub>" in text and "### Router weights" in text
    assert "MMoE accuracy | MMoE F1" in text and "outputs.router_weights" in text
    assert "I2MoE" not in text[: text.index("## Citation")] and "Expert alone" not in text
    assert not (tmp_path / EXPERT_WEIGHTS_PLOT).exists() and (tmp_path / ROUTER_WEIGHTS_PLOT).exists()
    names = {r.metric_name for r in card.data.eval_results}
    assert "MMoE Accuracy" in names and not any("I2MoE" in name for name in names)
    assert text.index("**MMoE (Yu et al., EMNLP 2024)**") < text.index("**I2MoE (Xin et al., ICML 2025)**")
