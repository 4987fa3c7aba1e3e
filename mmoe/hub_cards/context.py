"""The variables of ``templates/model_card.md``, built from :class:`~mmoe.hub_cards.MMoEModelCardData`.

Layering inside ``hub_cards``: :mod:`.formatting` (helpers over plain mappings) <- :mod:`.card_data`, :mod:`.plots`
<- this module <- :mod:`.model_card`; nothing here is imported back by the modules it imports.
"""

from __future__ import annotations

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
    example_value,
    expert_agreement_summary,
    expert_weight_groups,
    expert_weight_table,
    framework_versions,
    input_modalities,
    interaction_count_table,
    interaction_results_rows,
    log_table,
    results_rows,
    router_weight_table,
    synergy_weight_check,
    template_columns,
)
from .plots import EXPERT_WEIGHTS_PLOT, INTERACTION_F1_PLOT, ROUTER_WEIGHTS_PLOT

I2MOE_PAPER = "https://arxiv.org/abs/2505.19190"
MMOE_ONLY_OPTIONS = ("expert_num_train_epochs",)
"""Options of MMoE's stages, recorded for every run but unused by I2MoE (left out of its card), beside every
``router_*`` option."""


def unused_by_i2moe(option: str) -> bool:
    """Whether a recorded hyperparameter or ``TrainingArguments`` field belongs to MMoE's router or expert stages."""
    return option.startswith("router_") or option in MMOE_ONLY_OPTIONS


def router_reads(router_input: str | None, noun: str) -> str:
    """What the router reads, in words, for ``config.router_input``."""
    if router_input == "experts":
        return "the experts' pooled states"
    if router_input == "adapter":
        return f"the pooled {noun} of a LoRA adapter of its own (trained together with the head)"
    return f"the backbone's adapter-free pooled {noun}"


def router_procedure(data: MMoEModelCardData) -> str:
    """How the router was trained, for the card's "Training procedure" (from the config and the run's options)."""
    reads = router_reads(data.config.get("router_input"), "representation")
    if data.hyperparameters.get("router_objective") == "mixture":
        return (f"an MLP on {reads}, trained for the fused prediction itself (negative log-likelihood of the "
                "weighted expert probabilities, experts frozen) and selected by the fused validation macro-F1.")
    return f"an interaction classifier on {reads}, trained with focal loss."


def reweighting_details(config: Mapping[str, Any]) -> str | None:
    """I2MoE's reweighting model, for the "Model details" table."""
    kind, temperature = config.get("reweighting"), config.get("reweighting_temperature")
    if kind == "global":
        text = "global: one learned weight vector shared by every example (I2MoE's ablation)"
    elif kind == "mlp":
        text = (f"MLP, hidden size {config.get('reweighting_hidden_size')}, dropout "
                f"{config.get('reweighting_dropout')}, over the per-modality mean-pooled states of the adapter-free "
                "backbone: weights per example")
    else:
        return None
    return text + (f"; softmax temperature {temperature}" if temperature is not None else "")


def i2moe_description(data: MMoEModelCardData) -> dict[str, str]:
    """The sentences of an I2MoE card's introduction about training and reweighting (from ``config.json``)."""
    config = data.config
    weight = config.get("interaction_loss_weight")
    if isinstance(weight, (int, float)) and weight == 0:
        training = ("All experts train jointly on the classification loss alone (λ = 0: I2MoE's ablation without "
                    "interaction losses).")
    else:
        lam = f" (λ = {weight:g} beside the classification loss)" if isinstance(weight, (int, float)) else ""
        training = ("All experts train jointly with I2MoE's interaction losses" + lam + ": each expert also reads the "
                    "input with one modality at a time replaced by random noise, and its loss asks its output to "
                    "change, or not, as its interaction implies (a uniqueness expert must move when its own modality "
                    "is masked and only then, the synergy expert whatever is masked, the redundancy expert never).")
    temperature = config.get("reweighting_temperature")
    softmax = f"softmax, temperature {temperature}" if temperature is not None else "softmax"
    if config.get("reweighting") == "global":
        reweighting = (f"A global reweighting ({softmax}; one learned weight vector for every example, I2MoE's "
                       "ablation) weights the experts")
    else:
        reweighting = (f"A reweighting model (an MLP over the per-modality pooled states of the adapter-free backbone, "
                       f"{softmax}) gives every example its own expert weights")
    return {"training": training, "reweighting": reweighting}


def i2moe_usage(data: MMoEModelCardData) -> dict[str, Any]:
    """The usage snippet of an I2MoE card: the run's text template, an example row and ``max_length``."""
    template = data.hyperparameters.get("text_template")
    if not isinstance(template, str) or not all("{" + m + "}" in template for m in data.modalities):
        template = " | ".join("{" + m + "}" for m in data.modalities)
    row = ", ".join(f"{name!r}: {example_value(name)!r}" for name in template_columns(template))
    max_length = data.hyperparameters.get("max_length")
    return {
        "text_template": repr(template),
        "row": "{" + row + "}",
        "max_length": max_length if isinstance(max_length, int) and not isinstance(max_length, bool) else 512,
        "modalities": data.modalities,
    }


def model_details_rows(data: MMoEModelCardData) -> list[list[str]]:
    """The "Model details" table: backbone, experts, router, fusion (I2MoE: modalities, reweighting, interaction
    loss), LoRA, labels."""
    config = data.config
    id2label = config.get("id2label") or {}
    labels = ", ".join(f"`{k}`: {v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))
    targets = config.get("lora_target_modules")
    backbone = (
        f"`{data.backbone}`" + (f" ({data.backbone_type})" if data.backbone_type else "")
        if data.backbone
        else data.backbone_type
    )
    lora = (f"r={config.get('lora_r')}, α={config.get('lora_alpha')}, dropout={config.get('lora_dropout')}"
            if "lora_r" in config else None)
    target_modules = (", ".join(f"`{t}`" for t in targets) if isinstance(targets, list)
                      else (f"`{targets}`" if targets else "chosen from the backbone family"))
    dataset = (f"[{data.dataset_label}](https://huggingface.co/datasets/{data.dataset_id})"
               if data.dataset_id else data.dataset_label)
    inputs = input_modalities(data.hyperparameters, data.has_processor)["summary"]
    if data.is_i2moe:
        weight = config.get("interaction_loss_weight")
        rows = [
            ["Model type", "I2MoE: interpretable multimodal interaction-aware mixture of experts (n + 2 LoRA experts "
                           "+ reweighting model over one backbone)"],
            ["Backbone", backbone],
            ["Modalities", ", ".join(f"`{m}`" for m in data.modalities)],
            ["Inputs", inputs],
            ["Experts", ", ".join(f"`{e}`" for e in data.experts)],
            ["LoRA", lora],
            ["LoRA target modules", target_modules],
            ["Reweighting", reweighting_details(config)],
            ["Interaction loss weight λ", f"{weight:g}" if isinstance(weight, (int, float)) else None],
            ["Pooling", config.get("pooling")],
            ["Labels", labels or None],
            ["Training dataset", dataset],
            ["License", data.license],
        ]
        return [[name, cell(value)] for name, value in rows if value]
    router_hidden = config.get("router_hidden_size")
    router = "linear layer" if router_hidden == 0 else (f"MLP, hidden size {router_hidden}" if router_hidden else None)
    if router:
        router += f" reading {router_reads(config.get('router_input'), 'state')}"
        if data.hyperparameters.get("router_objective") == "mixture":
            router += "; trained for the fused prediction (NLL, experts frozen)"
        elif config.get("router_focal_gamma") is not None:
            router += f"; focal loss γ={config.get('router_focal_gamma')}, α={config.get('router_focal_alpha')}"
        router += f", dropout {config.get('router_dropout')}"
    prior = config.get("prior_weights")
    rows = [
        ["Model type", "MMoE: mixture of multimodal interaction experts (LoRA experts + router over one backbone)"],
        ["Backbone", backbone],
        ["Inputs", inputs],
        ["Experts", ", ".join(f"`{e}`" for e in data.experts)],
        ["LoRA", lora],
        ["LoRA target modules", target_modules],
        ["Router", router],
        ["Pooling", config.get("pooling")],
        ["Default fusion", f"`{config['fusion']}`" if config.get("fusion") else None],
        ["Prior weights", ", ".join(f"{e}={w:.3f}" for e, w in zip(data.experts, prior)) if prior else None],
        ["Labels", labels or None],
        ["Training dataset", dataset],
        ["License", data.license],
    ]
    return [[name, cell(value)] for name, value in rows if value]


def template_context(data: MMoEModelCardData) -> dict[str, Any]:
    """All variables of ``templates/model_card.md``.

    ``method`` (``"mmoe"`` or ``"i2moe"``, see :attr:`MMoEModelCardData.method`) selects what the card says about
    the model; the router's text (router objective, fusion rules, CE_moe) is MMoE's only, the expert weights and
    their agreement I2MoE's.
    """
    eval_results = data.eval_results
    counts = eval_results.get("interaction_counts") or {}
    fusion = eval_results.get("fusion") or {}
    router_f1 = (fusion.get("router") or {}).get("f1")
    oracle_f1 = (fusion.get("oracle") or {}).get("f1")
    baseline_f1 = (eval_results.get("baseline") or {}).get("f1")
    mmoe_f1 = (eval_results.get("mmoe") or {}).get("f1")
    plots = set(data.plots)
    i2moe = data.is_i2moe
    interpretation = eval_results.get("interpretation") if i2moe else None
    stages = []
    for name, record in data.training_stages.items():
        stages.append(
            {
                "name": name,
                "hyperparameters": [
                    [k, cell(v)] for k, v in (record.get("hyperparameters") or {}).items()
                    if not (i2moe and unused_by_i2moe(k))
                ],
                "summary": [[k, cell(v)] for k, v in (record.get("summary") or {}).items() if v is not None],
                "logs": log_table(record.get("logs") or []),
            }
        )
    hyperparameters = {k: v for k, v in data.hyperparameters.items() if not (i2moe and unused_by_i2moe(k))}
    root_seed_reason = data.root_seed_reason
    weights = expert_weight_groups(eval_results, data.experts) if i2moe else None
    return {
        "method": data.method,
        "is_i2moe": i2moe,
        "mixture_label": data.mixture_label,
        "mixture_name": data.mixture_name,
        "router_procedure": None if i2moe else router_procedure(data),
        "model_name": data.resolved_model_name(),
        "model_id": data.model_id or PLACEHOLDER_MODEL_ID,
        "has_model_id": bool(data.model_id),
        "backbone": data.backbone,
        "base_model_id": data.resolved_base_model(),
        "dataset_name": data.dataset_label,
        "experts": data.experts,
        "num_experts": len(data.experts),
        "modalities": data.modalities if i2moe else [],
        "i2moe_paper": I2MOE_PAPER,
        "i2moe_description": i2moe_description(data) if i2moe else None,
        "i2moe_usage": i2moe_usage(data) if i2moe else None,
        "reweighting_kind": data.config.get("reweighting") if i2moe else None,
        "fusion_default": data.config.get("fusion", "router"),
        "ablation_fusions": ["average", "max"] + (["prior"] if data.config.get("prior_weights") else []),
        "use_processor": data.has_processor,
        "model_details": model_details_rows(data),
        "split": eval_results.get("split"),
        "seeds": data.seeds,
        "root_seed": data.root_seed,
        "root_seed_reason": root_seed_reason,
        "results_rows": results_rows(eval_results, data.mixture_label, "deployable"),
        "ablation_rows": results_rows(eval_results, data.mixture_label, "ablations"),
        "results_header": list(METRIC_LABELS.values()),
        "degenerate_notes": degenerate_notes(
            eval_results, _num_labels(data.config), data.config.get("id2label"), data.mixture_label
        ),
        "interaction_rows": interaction_results_rows(eval_results),
        "gold_interaction_rows": interaction_results_rows(eval_results, "by_gold_interaction"),
        "router_interaction_accuracy": None if i2moe else _percent(eval_results.get("router_interaction_accuracy")),
        "input_example": input_example(data.hyperparameters.get("text_template")),
        "input_comment": input_modalities(data.hyperparameters, data.has_processor)["comment"],
        "router_oracle_gap": f"{oracle_f1 - router_f1:+.4f}" if _numbers(router_f1, oracle_f1) else None,
        "mmoe_minus_baseline": f"{mmoe_f1 - baseline_f1:+.4f}" if _numbers(mmoe_f1, baseline_f1) else None,
        "ce_moe": None if i2moe else _fmt(eval_results.get("ce_moe")),
        "ce_baseline": _fmt(eval_results.get("ce_baseline")),
        "interaction_counts": interaction_count_table(counts),
        "categorization": categorization_table(eval_results.get("categorization")),
        "router_weights": None if i2moe else router_weight_table(
            eval_results.get("router_weights_by_interaction"), data.experts
        ),
        "interaction_f1_plot": INTERACTION_F1_PLOT if INTERACTION_F1_PLOT in plots else None,
        "router_weights_plot": ROUTER_WEIGHTS_PLOT if ROUTER_WEIGHTS_PLOT in plots and not i2moe else None,
        "expert_weights": expert_weight_table(weights),
        "expert_weights_grouping": weights["grouping"] if weights else None,
        "expert_weights_plot": EXPERT_WEIGHTS_PLOT if EXPERT_WEIGHTS_PLOT in plots and i2moe else None,
        "expert_agreement": expert_agreement_summary(interpretation),
        "synergy_check": synergy_weight_check(interpretation),
        "hyperparameters": [[k, cell(v)] for k, v in hyperparameters.items()],
        "stages": stages,
        "versions": framework_versions(),
        "citations": list(reversed(CITATIONS)) if i2moe else CITATIONS,
    }


def input_example(template: Any) -> str:
    """The usage snippet's line building ``texts``: the run's ``text_template`` filled with example values."""
    names = template_columns(template)
    if not names:
        return 'texts = ["caption: a snowy street in january. text: loving this spring weather!"]'
    arguments = ", ".join(f"{name}={example_value(name)!r}" for name in names)
    return f"text_template = {template!r}  # as in training\ntexts = [text_template.format({arguments})]"


def _num_labels(config: Mapping[str, Any]) -> int | None:
    id2label = config.get("id2label")
    return len(id2label) if isinstance(id2label, Mapping) and id2label else config.get("num_labels")


def _percent(value: Any) -> str | None:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else None


def _fmt(value: Any) -> str | None:
    return f"{value:.4f}" if isinstance(value, (int, float)) else None
