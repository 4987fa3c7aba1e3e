"""Turn run data into the strings and table rows the model card template lays out.

Helpers over plain mappings only: this module imports nothing else of ``hub_cards`` (the template context, which
reads :class:`~mmoe.hub_cards.MMoEModelCardData`, is built in :mod:`.context`). Everything here tolerates missing
pieces: an absent block, category or metric gives an absent row or a ``"–"`` cell, never an exception.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any

from ..configuration_mmoe import DEFAULT_EXPERTS, FUSION_METHODS
from ..training.degenerate import degenerate_warnings, mixture_name

INTERACTIONS: tuple[str, ...] = tuple(DEFAULT_EXPERTS)
FUSION_RULES: tuple[str, ...] = tuple(FUSION_METHODS)
METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "macro_f1": "Macro-F1",
}
"""Columns of the card's results table, in order (a block without a metric shows a dash)."""
FUSION_LABELS: dict[str, str] = {
    "average": "Fusion: average",
    "max": "Fusion: max",
    "prior": "Fusion: prior (interaction frequencies)",
    "router": "Fusion: router",
    "oracle": "Fusion: oracle (gold interaction)",
}
VERSION_PACKAGES: tuple[str, ...] = (
    "mmoe",
    "transformers",
    "peft",
    "torch",
    "datasets",
    "accelerate",
    "huggingface_hub",
    "tokenizers",
)
MAX_LOG_ROWS = 20
EMPTY = "–"
PLACEHOLDER_MODEL_ID = "your-org/your-mmoe-model"
DEPLOYABLE_SYSTEMS: tuple[str, ...] = ("baseline", "mmoe")
"""Keys of :func:`result_systems` that are models one can deploy: the single-model baseline and the run's mixture.
Only they go into the ``model-index``; the fusion rules, the oracle and the experts alone are ablations, shown in the
card's body."""
EXAMPLE_VALUES: dict[str, str] = {
    "caption": "a snowy street in january",
    "image_caption": "a snowy street in january",
    "context": "what a lovely morning.",
    "utterance": "loving this spring weather!",
    "text": "loving this spring weather!",
    "claim": "the bridge opened in 1932",
    "evidence": "the bridge was opened to traffic in march 1932.",
    "premise": "a man is playing a guitar on stage.",
    "hypothesis": "a man is performing music.",
    "question": "what is the weather like?",
    "answer": "cold and snowy.",
}
"""Example column values of the usage snippet and the ``widget:`` example; another column gets
``"an example <name>"``."""


# ------------------------------------------------------------------ small helpers
def slugify(name: str) -> str:
    """``"MUStARD (captions)"`` -> ``"mustard-captions"``: a dataset ``type`` for the model-index."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "custom"


def count_text(value: Any) -> str:
    """A count, possibly a mean over seeds: ``120`` stays ``"120"``, ``120.33`` becomes ``"120.3"``."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.1f}"
    return str(value)


def cell(value: Any) -> str:
    """A Markdown table cell: ``|`` escaped, newlines flattened, ``None`` shown as a dash."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def metric_cell(block: Mapping[str, Any] | None, metric: str) -> str:
    """``"0.6012"`` or ``"0.6012 ± 0.0123"`` (with ``<metric>_std``), or a dash when absent."""
    if not block or not isinstance(block.get(metric), (int, float)):
        return EMPTY
    text = f"{block[metric]:.4f}"
    std = block.get(f"{metric}_std")
    return f"{text} ± {std:.4f}" if isinstance(std, (int, float)) else text


def ordered_categories(*mappings: Mapping[str, Any] | None) -> list[str]:
    """Interaction categories found in any mapping: the three MMoE ones first, then any others.

    ``<name>_std`` keys (spreads added when results are averaged over seeds) are not categories.
    """
    found: list[str] = []
    for mapping in mappings:
        for key in mapping if isinstance(mapping, Mapping) else {}:
            if key not in found and not str(key).endswith("_std"):
                found.append(key)
    return [c for c in INTERACTIONS if c in found] + [c for c in found if c not in INTERACTIONS]


def method_label(results: Mapping[str, Any]) -> str:
    """Short name of the run's mixture, ``"MMoE"`` or ``"I2MoE"``: :func:`~mmoe.training.degenerate.mixture_name`
    without its parenthesis (``results["method"]`` decides; no method means MMoE)."""
    return mixture_name(results).split(" (")[0]


def result_systems(
    eval_results: Mapping[str, Any], mixture_label: str | None = None
) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(key, label, metric block)`` for the baseline, the run's mixture (key ``"mmoe"`` for both methods, label
    ``mixture_label``, by default :func:`method_label`), every fusion rule (MMoE) and every expert alone (I2MoE's
    ``expert_scores``) present."""
    if isinstance(eval_results.get("baseline"), Mapping):
        yield "baseline", "Baseline (single model)", eval_results["baseline"]
    if isinstance(eval_results.get("mmoe"), Mapping):
        yield "mmoe", mixture_label or method_label(eval_results), eval_results["mmoe"]
    fusion = eval_results.get("fusion") or {}
    for rule in list(FUSION_RULES) + [r for r in fusion if r not in FUSION_RULES]:
        if isinstance(fusion.get(rule), Mapping):
            yield f"fusion-{rule}", FUSION_LABELS.get(rule, f"Fusion: {rule}"), fusion[rule]
    expert_scores = eval_results.get("expert_scores")
    for expert, block in (expert_scores.items() if isinstance(expert_scores, Mapping) else ()):
        if isinstance(block, Mapping) and not str(expert).endswith("_std"):
            yield f"expert-{expert}", f"Expert alone: {expert}", block


def framework_versions() -> dict[str, str]:
    """Versions of Python and of the installed packages the model depends on."""
    versions = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


# ------------------------------------------------------------------ inputs
def example_value(column: str) -> str:
    """An example value of a template column (:data:`EXAMPLE_VALUES`, else ``"an example <column>"``)."""
    return EXAMPLE_VALUES.get(column, f"an example {column.replace('_', ' ')}")


def template_columns(template: Any) -> list[str]:
    """The column names a ``text_template`` reads (``"{claim} | {evidence}"`` -> ``["claim", "evidence"]``)."""
    return list(dict.fromkeys(re.findall(r"(?<!{){(\w+)}", template))) if isinstance(template, str) else []


def example_text(template: Any) -> str | None:
    """The training template filled with :func:`example_value` of each column, or ``None`` without a template that
    names a column (the ``widget:`` example of the card)."""
    if not template_columns(template):
        return None
    try:
        return str(template).format_map({name: example_value(name) for name in template_columns(template)})
    except (IndexError, KeyError, ValueError):  # positional fields or format specs: substitute by hand
        return re.sub(r"{(\w+)}", lambda m: example_value(m.group(1)), str(template))


def is_caption_column(column: str) -> bool:
    """Whether a template column carries image content as text (the caption route): its name says ``caption``."""
    return "caption" in column.lower()


def input_modalities(hyperparameters: Mapping[str, Any], has_processor: bool = False) -> dict[str, Any]:
    """What a model reads, from ``mmoe_run.json``'s ``hyperparameters`` (``text_template``, ``image_column``).

    Returns ``{"columns": [(column, kind)], "template", "image_column", "caption_route", "summary", "comment"}``:
    ``kind`` is ``"image"`` (``image_column``), ``"image caption, as text"`` (a caption column, see
    :func:`is_caption_column`) or ``"text"``; ``summary`` is the "Inputs" cell of the card's model details (``None``
    when nothing is known), ``comment`` the first comment line of the usage snippet (true to these columns: a
    text + text run never reads "caption").
    """
    template = hyperparameters.get("text_template")
    template = template if isinstance(template, str) else None
    image_column = hyperparameters.get("image_column") or None
    columns: list[tuple[str, str]] = []
    if image_column:
        columns.append((str(image_column), "image"))
    for name in template_columns(template):
        if name != image_column:
            columns.append((name, "image caption, as text" if is_caption_column(name) else "text"))
    captions = [name for name, kind in columns if kind.startswith("image caption")]
    texts = [name for name, kind in columns if kind == "text"]

    def names(items: list[str]) -> str:
        quoted = [f"`{n}`" for n in items]
        return " and ".join(quoted) if len(quoted) <= 2 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"

    if image_column and has_processor:
        comment = f"# The processor reads the image (`{image_column}`)" + (
            f" and the text ({names(texts + captions)})." if texts or captions else ".")
    elif captions:
        comment = f"# Image content reaches the text backbone as a caption ({names(captions)})" + (
            f", next to the text ({names(texts)})." if texts else ".")
    elif texts:
        comment = (f"# The model reads text only: {names(texts)}, joined by the training template."
                   if len(texts) > 1 else f"# The model reads text only: {names(texts)}.")
    else:
        comment = "# The model reads one text per example, built as in training."
    summary = None
    if columns:
        summary = ", ".join(f"`{name}` ({kind})" for name, kind in columns)
        if template:
            summary += f"; template `{template}`"
    return {"columns": columns, "template": template, "image_column": image_column,
            "caption_route": bool(captions), "summary": summary, "comment": comment}


# ------------------------------------------------------------------ tables
def results_rows(
    eval_results: Mapping[str, Any], mixture_label: str | None = None, systems_kept: str = "all"
) -> list[list[str]]:
    """Overall results: one row per system (the mixture named ``mixture_label``, see :func:`result_systems`); the
    best non-oracle value of each metric in bold.

    ``systems_kept``: ``"all"``, ``"deployable"`` (the baseline and the mixture, :data:`DEPLOYABLE_SYSTEMS`) or
    ``"ablations"`` (every other system: fusion rules, the oracle, experts alone); bold marks the best of the rows
    shown.
    """
    systems = [
        system for system in result_systems(eval_results, mixture_label)
        if systems_kept == "all" or (system[0] in DEPLOYABLE_SYSTEMS) == (systems_kept == "deployable")
    ]
    best: dict[str, float] = {}
    for key, _, block in systems:
        for metric in METRIC_LABELS:
            value = block.get(metric)
            if key != "fusion-oracle" and isinstance(value, (int, float)):
                best[metric] = max(best.get(metric, float("-inf")), value)
    contenders = [block for key, _, block in systems if key != "fusion-oracle"]
    tied = {m for m in METRIC_LABELS if len({b.get(m) for b in contenders}) <= 1}  # bold only a real winner
    rows = []
    for key, label, block in systems:
        row = [label]
        for metric in METRIC_LABELS:
            text = metric_cell(block, metric)
            if key != "fusion-oracle" and metric not in tied and block.get(metric) == best.get(metric):
                text = f"**{text}**"
            row.append(text)
        rows.append(row)
    return rows


def degenerate_notes(
    eval_results: Mapping[str, Any],
    num_labels: int | None,
    id2label: Mapping[Any, Any] | None = None,
    mixture_label: str | None = None,
) -> list[str]:
    """Warnings for systems that predict one class only (a constant predictor can score a high F1).

    The baseline and MMoE are flagged from ``eval_results["degenerate"]``, which the pipeline computes from the
    predictions (:func:`mmoe.training.degenerate.degenerate_warnings`). Systems it does not cover (the fusion
    rules, results of older runs) are judged from their binary scores (positive class 1): recall 1 with precision
    equal to accuracy (< 1) means every example was predicted positive; recall 0 means the positive class was
    never found.
    """
    notes = [note[0].upper() + note[1:] for note in degenerate_warnings(eval_results, id2label)]
    flags = eval_results.get("degenerate")
    covered = set(flags) & {"baseline", "mmoe"} if isinstance(flags, Mapping) else set()
    if "mmoe" in covered:
        covered.add("fusion-router")  # the same predictions as MMoE
    if num_labels != 2:
        return notes
    for key, label, block in result_systems(eval_results, mixture_label):
        if key in covered:
            continue
        accuracy, precision, recall = (block.get(m) for m in ("accuracy", "precision", "recall"))
        if not _numbers(accuracy, precision, recall):
            continue
        if abs(recall - 1) < 1e-9 and abs(precision - accuracy) < 1e-9 and accuracy < 1:
            notes.append(f"{label} predicts the positive class for every test example.")
        elif abs(recall) < 1e-9:
            notes.append(f"{label} never predicts the positive class correctly (recall 0).")
    return notes


def group_counts(eval_results: Mapping[str, Any], gold: bool = False) -> dict[str, Any]:
    """Evaluation examples per interaction type: inferred types (``interaction_counts`` of the evaluation split), or
    gold types (row sums of the categorization confusion matrix, on data that has them)."""
    if not gold:
        counts = (eval_results.get("interaction_counts") or {}).get(eval_results.get("split")) or {}
        return dict(counts) if isinstance(counts, Mapping) else {}
    confusion = (eval_results.get("categorization") or {}).get("confusion") or {}
    return {
        name: sum(n for p, n in (row or {}).items() if not str(p).endswith("_std") and isinstance(n, (int, float)))
        for name, row in confusion.items()
        if not str(name).endswith("_std")
    }


def interaction_results_rows(eval_results: Mapping[str, Any], key: str = "by_interaction") -> list[list[str]]:
    """Per-interaction rows: test count, baseline accuracy/F1, MMoE accuracy/F1 and the F1 change.

    ``key="by_interaction"`` groups test examples by their inferred interaction type (counts from
    ``interaction_counts``); ``key="by_gold_interaction"`` by their gold type (counts from the categorization
    confusion matrix), on data that has one.
    """
    by_interaction = eval_results.get(key) or {}
    baseline, mmoe = by_interaction.get("baseline") or {}, by_interaction.get("mmoe") or {}
    counts = group_counts(eval_results, gold=key != "by_interaction")
    rows = []
    for category in ordered_categories(baseline, mmoe):
        base_block, mmoe_block = baseline.get(category), mmoe.get(category)
        delta = EMPTY
        if base_block and mmoe_block and all(isinstance(b.get("f1"), (int, float)) for b in (base_block, mmoe_block)):
            delta = f"{mmoe_block['f1'] - base_block['f1']:+.4f}"
        rows.append(
            [
                category,
                count_text(counts[category]) if category in counts else EMPTY,
                metric_cell(base_block, "accuracy"),
                metric_cell(base_block, "f1"),
                metric_cell(mmoe_block, "accuracy"),
                metric_cell(mmoe_block, "f1"),
                delta,
            ]
        )
    return rows


def interaction_count_table(counts: Mapping[str, Mapping[str, int]]) -> dict[str, Any] | None:
    """Interaction statistics: categories as rows, splits as columns, cells ``"n (p %)"``."""
    splits = [split for split, values in counts.items() if isinstance(values, Mapping) and values]
    if not splits:
        return None
    categories = ordered_categories(*(counts[split] for split in splits))
    totals = {
        split: sum(counts[split][c] for c in categories if isinstance(counts[split].get(c), (int, float)))
        for split in splits
    }
    rows = []
    for category in categories:
        row = [category]
        for split in splits:
            n = counts[split].get(category)
            share = f" ({100 * n / totals[split]:.1f} %)" if isinstance(n, (int, float)) and totals[split] else ""
            row.append(f"{count_text(n)}{share}" if n is not None else EMPTY)
        rows.append(row)
    rows.append(["**total**"] + [f"**{count_text(totals[split])}**" for split in splits])
    return {"header": ["interaction"] + splits, "rows": rows}


def categorization_table(categorization: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Categorization accuracy and confusion matrix (gold rows, predicted columns), when present."""
    if not categorization:
        return None
    confusion = categorization.get("confusion") or {}
    predicted = ordered_categories(*confusion.values())
    rows = [
        [gold] + [cell((confusion[gold] or {}).get(p, 0)) for p in predicted] for gold in ordered_categories(confusion)
    ]
    accuracy = categorization.get("accuracy")
    return {
        "accuracy": f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else None,
        "header": ["gold \\ predicted"] + predicted,
        "rows": rows,
    }


def router_weight_table(weights: Mapping[str, Mapping[str, float]] | None, experts: list[str]) -> dict[str, Any] | None:
    """Mean router weight of every expert (columns) for each interaction category (rows)."""
    if not weights:
        return None
    columns = list(dict.fromkeys(list(experts) + ordered_categories(*weights.values())))
    columns = [e for e in columns if any(e in (row or {}) for row in weights.values())]
    rows = []
    for category in ordered_categories(weights):
        row_weights = weights.get(category) or {}
        rows.append([category] + [_weight_text(row_weights, e) for e in columns])
    return {"header": ["interaction"] + columns, "rows": rows}


ALL_EXAMPLES = "all"
"""The group of :func:`expert_weight_groups` that holds the mean weights over every evaluation example."""


def expert_weight_groups(eval_results: Mapping[str, Any], experts: list[str] | None = None) -> dict[str, Any] | None:
    """The expert weights of an I2MoE run as the card shows them, one source for its plot and its table.

    Returns ``None`` without ``interpretation``, else ``{"grouping", "experts", "groups", "counts"}``:
    ``groups`` is ``{group: {expert: mean weight}}`` with :data:`ALL_EXAMPLES` (``mean_weights``) first, then each
    gold interaction type (``weights_by_gold_interaction``, ``grouping="gold"``) when the data has them, else each
    categorized type (``weights_by_interaction``, ``grouping="categorized"``); ``counts`` the evaluation examples of
    each group, where known; ``experts`` the columns, ``experts`` first, then any other expert found.
    """
    interpretation = eval_results.get("interpretation")
    if not isinstance(interpretation, Mapping):
        return None
    grouping, by_group = None, {}
    for name, key in (("gold", "weights_by_gold_interaction"), ("categorized", "weights_by_interaction")):
        candidate = interpretation.get(key)
        if isinstance(candidate, Mapping) and any(isinstance(v, Mapping) and v for v in candidate.values()):
            grouping, by_group = name, candidate
            break
    groups: dict[str, Mapping[str, Any]] = {}
    if isinstance(interpretation.get("mean_weights"), Mapping) and interpretation["mean_weights"]:
        groups[ALL_EXAMPLES] = interpretation["mean_weights"]
    for category in ordered_categories(by_group):
        if isinstance(by_group.get(category), Mapping) and by_group[category]:
            groups[category] = by_group[category]
    columns = [
        e for e in dict.fromkeys(list(experts or []) + [k for g in groups.values() for k in g])
        if not str(e).endswith("_std") and any(isinstance(g.get(e), (int, float)) for g in groups.values())
    ]
    if not columns:
        return None
    counts = group_counts(eval_results, gold=grouping == "gold") if grouping else {}
    categorized = group_counts(eval_results)
    if categorized and all(isinstance(n, (int, float)) for n in categorized.values()):
        counts[ALL_EXAMPLES] = sum(categorized.values())
    counts = {g: counts[g] for g in groups if isinstance(counts.get(g), (int, float))}
    return {"grouping": grouping, "experts": columns, "groups": groups, "counts": counts}


def expert_weight_table(weights: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """:func:`expert_weight_groups` as a table: one row per group (examples, then each expert's mean weight)."""
    if not weights:
        return None
    first = {"gold": "gold interaction", "categorized": "interaction"}.get(weights["grouping"], "examples")
    rows = []
    for group, row_weights in weights["groups"].items():
        label = "**all**" if group == ALL_EXAMPLES else group
        count = weights["counts"].get(group)
        rows.append([label, count_text(count) if count is not None else EMPTY]
                    + [_weight_text(row_weights, e) for e in weights["experts"]])
    return {"header": [first, "examples"] + list(weights["experts"]), "rows": rows}


def synergy_weight_check(interpretation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Whether the synergy expert's mean weight is higher on gold synergy examples than on any other gold type.

    Computed from ``weights_by_gold_interaction`` as :func:`mmoe.training.evaluation.evaluate_i2moe` does (so
    results averaged over seeds are judged on the mean weights the card shows), else read from
    ``synergy_weight_highest_on_gold_synergy``. Returns ``{"highest", "on", "elsewhere", "elsewhere_group"}``
    (the weights as text, ``None`` when unknown), or ``None`` without either.
    """
    if not isinstance(interpretation, Mapping):
        return None
    by_gold = interpretation.get("weights_by_gold_interaction")
    on = (by_gold.get("synergy") or {}).get("synergy") if isinstance(by_gold, Mapping) else None
    if isinstance(on, (int, float)):
        elsewhere = {
            group: weights["synergy"]
            for group, weights in by_gold.items()
            if group != "synergy" and isinstance(weights, Mapping) and isinstance(weights.get("synergy"), (int, float))
        }
        top = max(elsewhere, key=elsewhere.get) if elsewhere else None
        return {
            "highest": not elsewhere or on > elsewhere[top],
            "on": f"{on:.3f}",
            "elsewhere": f"{elsewhere[top]:.3f}" if top else None,
            "elsewhere_group": top,
        }
    flag = interpretation.get("synergy_weight_highest_on_gold_synergy")
    if isinstance(flag, bool):
        return {"highest": flag, "on": None, "elsewhere": None, "elsewhere_group": None}
    return None


def expert_agreement_summary(interpretation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How often the experts' own predictions agree (I2MoE's interpretation, Table 3 of the paper), as text:
    ``{"all_agree", "disagreement_rows", "accuracy_when_disagree", "pairwise"}``; ``None`` when nothing is known."""
    if not isinstance(interpretation, Mapping):
        return None
    pairwise = interpretation.get("pairwise_agreement")
    pairs = [
        (pair.replace("|", " / "), _percent_text(rate))
        for pair, rate in (pairwise.items() if isinstance(pairwise, Mapping) else ())
        if not str(pair).endswith("_std") and isinstance(rate, (int, float))
    ]
    rows = interpretation.get("disagreement_rows")
    summary = {
        "all_agree": _percent_text(interpretation.get("all_agree_rate")),
        "disagreement_rows": count_text(rows) if isinstance(rows, (int, float)) else None,
        "accuracy_when_disagree": _percent_text(interpretation.get("accuracy_when_experts_disagree")),
        "pairwise": pairs,
    }
    return summary if summary["all_agree"] or pairs else None


def _percent_text(value: Any) -> str | None:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _weight_text(row: Mapping[str, Any], expert: str) -> str:
    if not isinstance(row.get(expert), (int, float)):
        return EMPTY
    std = row.get(f"{expert}_std")
    return f"{row[expert]:.3f}" + (f" ± {std:.3f}" if isinstance(std, (int, float)) else "")


def _evenly(indices: list[int], count: int) -> set[int]:
    """``count`` evenly spaced members of ``indices`` (first and last included)."""
    if count <= 0 or not indices:
        return set()
    if count >= len(indices):
        return set(indices)
    return {indices[round(k * (len(indices) - 1) / max(count - 1, 1))] for k in range(count)}


def thin_logs(logs: list[Mapping[str, Any]], limit: int = MAX_LOG_ROWS) -> list[Mapping[str, Any]]:
    """At most ``limit`` rows: the last row and evaluation rows first, then evenly spaced training rows."""
    if len(logs) <= limit:
        return list(logs)
    last = len(logs) - 1
    evaluations = [i for i, row in enumerate(logs) if i != last and any(str(k).startswith("Validation") for k in row)]
    keep = {last} | _evenly(evaluations, limit - 1)
    others = [i for i in range(last) if i not in keep]
    keep |= _evenly(others, limit - len(keep))
    return [logs[i] for i in sorted(keep)]


def log_table(logs: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A stage's loss log as a table, thinned by :func:`thin_logs`."""
    if not logs:
        return None
    logs = thin_logs(logs)
    columns = list(dict.fromkeys(key for row in logs for key in row))
    return {"header": columns, "rows": [[cell(row.get(column)) for column in columns] for row in logs]}


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) for v in values)
