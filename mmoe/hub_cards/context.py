"""The variables of ``templates/model_card.md``, built from :class:`~mmoe.hub_cards.MMoEModelCardData`.

Layering inside ``hub_cards``: :mod:`.formatting` (helpers over plain mappings) <- :mod:`.card_data` <- this module
<- :mod:`.model_card`; nothing here is imported back by the modules it imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .card_data import MMoEModelCardData
from .citations import CITATIONS
from .formatting import (
    METRIC_LABELS,
    PLACEHOLDER_MODEL_ID,
    _numbers,
    categorization_table,
    cell,
    degenerate_notes,
    framework_versions,
    interaction_count_table,
    interaction_results_rows,
    log_table,
    results_rows,
    router_weight_table,
)


def router_procedure(data: MMoEModelCardData) -> str:
    """How the router was trained, for the card's "Training procedure" (from the config and the run's options)."""
    reads = ("the experts' pooled states" if data.config.get("router_input") == "experts"
             else "the backbone's adapter-free pooled representation")
    if data.hyperparameters.get("router_objective") == "mixture":
        return (f"an MLP on {reads}, trained for the fused prediction itself (negative log-likelihood of the "
                "weighted expert probabilities, experts frozen) and selected by the fused validation macro-F1.")
    return f"an interaction classifier on {reads}, trained with focal loss."


def model_details_rows(data: MMoEModelCardData) -> list[list[str]]:
    """The "Model details" table: backbone, experts, router, fusion, LoRA, labels."""
    config = data.config
    id2label = config.get("id2label") or {}
    labels = ", ".join(f"`{k}`: {v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))
    targets = config.get("lora_target_modules")
    router_hidden = config.get("router_hidden_size")
    router = "linear layer" if router_hidden == 0 else (f"MLP, hidden size {router_hidden}" if router_hidden else None)
    if router:
        reads = ("the experts' pooled states" if config.get("router_input") == "experts"
                 else "the backbone's adapter-free pooled state")
        router += f" reading {reads}"
        if data.hyperparameters.get("router_objective") == "mixture":
            router += "; trained for the fused prediction (NLL, experts frozen)"
        elif config.get("router_focal_gamma") is not None:
            router += f"; focal loss γ={config.get('router_focal_gamma')}, α={config.get('router_focal_alpha')}"
        router += f", dropout {config.get('router_dropout')}"
    prior = config.get("prior_weights")
    rows = [
        ["Model type", "MMoE: mixture of multimodal interaction experts (LoRA experts + router over one backbone)"],
        [
            "Backbone",
            f"`{data.backbone}`" + (f" ({data.backbone_type})" if data.backbone_type else "")
            if data.backbone
            else data.backbone_type,
        ],
        ["Experts", ", ".join(f"`{e}`" for e in data.experts)],
        [
            "LoRA",
            f"r={config.get('lora_r')}, α={config.get('lora_alpha')}, dropout={config.get('lora_dropout')}"
            if "lora_r" in config
            else None,
        ],
        [
            "LoRA target modules",
            ", ".join(f"`{t}`" for t in targets)
            if isinstance(targets, list)
            else (f"`{targets}`" if targets else "chosen from the backbone family"),
        ],
        ["Router", router],
        ["Pooling", config.get("pooling")],
        ["Default fusion", f"`{config['fusion']}`" if config.get("fusion") else None],
        ["Prior weights", ", ".join(f"{e}={w:.3f}" for e, w in zip(data.experts, prior)) if prior else None],
        ["Labels", labels or None],
        [
            "Training dataset",
            (
                f"[{data.dataset_name or data.dataset_id}](https://huggingface.co/datasets/{data.dataset_id})"
                if data.dataset_id
                else data.dataset_name
            ),
        ],
        ["License", data.license],
    ]
    return [[name, cell(value)] for name, value in rows if value]


def template_context(data: MMoEModelCardData) -> dict[str, Any]:
    """All variables of ``templates/model_card.md``."""
    eval_results = data.eval_results
    counts = eval_results.get("interaction_counts") or {}
    fusion = eval_results.get("fusion") or {}
    router_f1 = (fusion.get("router") or {}).get("f1")
    oracle_f1 = (fusion.get("oracle") or {}).get("f1")
    baseline_f1 = (eval_results.get("baseline") or {}).get("f1")
    mmoe_f1 = (eval_results.get("mmoe") or {}).get("f1")
    plots = set(data.plots)
    stages = []
    for name, record in data.training_stages.items():
        stages.append(
            {
                "name": name,
                "hyperparameters": [[k, cell(v)] for k, v in (record.get("hyperparameters") or {}).items()],
                "summary": [[k, cell(v)] for k, v in (record.get("summary") or {}).items() if v is not None],
                "logs": log_table(record.get("logs") or []),
            }
        )
    return {
        "router_procedure": router_procedure(data),
        "model_name": data.resolved_model_name(),
        "model_id": data.model_id or PLACEHOLDER_MODEL_ID,
        "has_model_id": bool(data.model_id),
        "backbone": data.backbone,
        "base_model_id": data.resolved_base_model(),
        "dataset_name": data.dataset_name or data.dataset_id,
        "experts": data.experts,
        "num_experts": len(data.experts),
        "fusion_default": data.config.get("fusion", "router"),
        "ablation_fusions": ["average", "max"] + (["prior"] if data.config.get("prior_weights") else []),
        "use_processor": data.has_processor,
        "model_details": model_details_rows(data),
        "split": eval_results.get("split"),
        "seeds": data.seeds,
        "root_seed": data.root_seed,
        "root_seed_reason": data.root_seed_reason,
        "results_rows": results_rows(eval_results),
        "results_header": list(METRIC_LABELS.values()),
        "degenerate_notes": degenerate_notes(eval_results, _num_labels(data.config), data.config.get("id2label")),
        "interaction_rows": interaction_results_rows(eval_results),
        "gold_interaction_rows": interaction_results_rows(eval_results, "by_gold_interaction"),
        "router_interaction_accuracy": _percent(eval_results.get("router_interaction_accuracy")),
        "input_example": input_example(data.hyperparameters.get("text_template")),
        "router_oracle_gap": f"{oracle_f1 - router_f1:+.4f}" if _numbers(router_f1, oracle_f1) else None,
        "mmoe_minus_baseline": f"{mmoe_f1 - baseline_f1:+.4f}" if _numbers(mmoe_f1, baseline_f1) else None,
        "ce_moe": _fmt(eval_results.get("ce_moe")),
        "ce_baseline": _fmt(eval_results.get("ce_baseline")),
        "interaction_counts": interaction_count_table(counts),
        "categorization": categorization_table(eval_results.get("categorization")),
        "router_weights": router_weight_table(eval_results.get("router_weights_by_interaction"), data.experts),
        "interaction_f1_plot": "interaction_f1.png" if "interaction_f1.png" in plots else None,
        "router_weights_plot": "router_weights.png" if "router_weights.png" in plots else None,
        "hyperparameters": [[k, cell(v)] for k, v in data.hyperparameters.items()],
        "stages": stages,
        "versions": framework_versions(),
        "citations": CITATIONS,
    }


_EXAMPLE_VALUES = {
    "caption": "a snowy street in january",
    "image_caption": "a snowy street in january",
    "context": "what a lovely morning.",
    "utterance": "loving this spring weather!",
    "text": "loving this spring weather!",
}


def input_example(template: Any) -> str:
    """The usage snippet's line building ``texts``: the run's ``text_template`` filled with example values."""
    if not isinstance(template, str) or not re.search(r"{\w+}", template):
        return 'texts = ["caption: a snowy street in january. text: loving this spring weather!"]'
    names = list(dict.fromkeys(re.findall(r"{(\w+)}", template)))
    arguments = ", ".join(f"{name}={_EXAMPLE_VALUES.get(name, '...')!r}" for name in names)
    return f"text_template = {template!r}  # as in training\ntexts = [text_template.format({arguments})]"


def _num_labels(config: Mapping[str, Any]) -> int | None:
    id2label = config.get("id2label")
    return len(id2label) if isinstance(id2label, Mapping) and id2label else config.get("num_labels")


def _percent(value: Any) -> str | None:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else None


def _fmt(value: Any) -> str | None:
    return f"{value:.4f}" if isinstance(value, (int, float)) else None
