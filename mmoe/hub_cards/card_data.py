"""What a model card says about an MMoE or I2MoE run, gathered from the run's output folder and from training callbacks.

:class:`MMoEModelCardData` is the single source of the card: :meth:`MMoEModelCardData.from_output_dir` reads
the pipeline's ``config.json``, ``eval_results.json``, ``mmoe_run.json`` and ``mmoe_training_logs.json``
(written by :class:`~mmoe.training.callbacks.ModelCardCallback`); :meth:`MMoEModelCardData.to_metadata` turns it into
the YAML header (``model-index`` built with ``huggingface_hub``'s :class:`~huggingface_hub.EvalResult`), and
:func:`mmoe.hub_cards.context.template_context` into the variables of the Jinja template.

Every input is optional: a card renders from whatever files exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from ..configuration_mmoe import DEFAULT_EXPERTS, i2moe_expert_names
from ..training.degenerate import MIXTURE_NAMES, mixture_name
from ..training.run_files import CONFIG_FILE, EVAL_RESULTS_FILE, RUN_FILE, TRAINING_LOGS_FILE, read_json
from . import formatting

DEFAULT_TAGS: tuple[str, ...] = (
    "mmoe",
    "mixture-of-experts",
    "multimodal",
    "multimodal-interactions",
    "lora",
    "peft",
    "text-classification",
    "custom_code",
)
"""Hub tags every card carries (``mmoe`` is the library's name, for I2MoE runs too); the backbone's ``model_type``
and :data:`METHOD_TAGS` of the run's method are added to them."""

METHOD_TAGS: dict[str, tuple[str, ...]] = {"mmoe": (), "i2moe": ("i2moe",)}
"""Extra Hub tags of each training method (``--method``)."""

METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "macro_f1")
"""Metric names of every result block of ``eval_results.json``, in the order the card shows them."""

# How a run names local things in files that travel with the model; defined in training/ (which writes
# mmoe_run.json) and re-exported here for the card.
from ..training.display_names import (  # noqa: E402
    backbone_display_name,
    display_name,
    hub_dataset_id,
    is_hub_model_id,
)


@dataclass
class MMoEModelCardData:
    """Everything the MMoE model card shows, each piece optional.

    Args:
        model_id: Hub repo id the model is (or will be) pushed to, e.g. ``"org/mmoe-minilm-mustard"``; used
            in the usage snippet. ``None`` shows a placeholder.
        model_name: pretty name, also the ``model-index`` name. Defaults to ``"MMoE (<backbone>) on <dataset>"``
            (``"I2MoE (...) on ..."`` for an I2MoE run).
        base_model: Hub id of the backbone; derived from ``mmoe_run.json`` / ``config.json`` when it is a Hub id.
        backbone: backbone name or path as recorded by the run (shown in the card even when not a Hub id).
        dataset_name: pretty name of the training dataset.
        dataset_id: Hub id of the dataset, for the ``datasets`` metadata and the ``model-index``; read from
            ``mmoe_run.json``, else derived from its ``dataset`` when that is a Hub id (:func:`hub_dataset_id`).
        language, license: card metadata.
        tags: extra Hub tags, added to :data:`DEFAULT_TAGS`.
        library_name, pipeline_tag: card metadata; the model loads with ``transformers`` (remote code).
        config: the saved model's ``config.json``.
        eval_results: ``eval_results.json`` (see the pipeline's schema).
        run: ``mmoe_run.json`` (backbone, dataset, seeds, hyperparameters, license, language).
        hyperparameters: pipeline hyperparameters, shown in the "Training hyperparameters" table.
        training_stages: per Trainer stage (``"baseline"``, ``"experts/synergy"``, ``"router"``, ...): the
            non-default ``TrainingArguments`` and the loss log collected by :class:`ModelCardCallback`.
        plots: PNG file names (relative to the model folder) embedded in the card.
        has_processor: whether the model folder holds an image processor (the usage snippet uses
            ``AutoProcessor`` instead of ``AutoTokenizer``).
    """

    model_id: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    backbone: str | None = None
    dataset_name: str | None = None
    dataset_id: str | None = None
    language: str | list[str] | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    library_name: str = "transformers"
    pipeline_tag: str = "text-classification"
    config: dict[str, Any] = field(default_factory=dict)
    eval_results: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    training_stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    has_processor: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_output_dir(cls, output_dir: str | Path, **overrides: Any) -> MMoEModelCardData:
        """Collect the card data of a finished (or partial) pipeline run from its output folder.

        Args:
            output_dir: the pipeline's ``output_dir``.
            **overrides: any field of this class (e.g. ``model_id="org/name"``); ``None`` values are ignored.
        """
        output_dir = Path(output_dir)
        config = read_json(output_dir / CONFIG_FILE)
        run = read_json(output_dir / RUN_FILE)
        logs = read_json(output_dir / TRAINING_LOGS_FILE)
        data = cls(
            config=config,
            eval_results=read_json(output_dir / EVAL_RESULTS_FILE),
            run=run,
            hyperparameters=dict(run.get("hyperparameters") or {}),
            training_stages=dict(logs.get("stages") or {}),
            # Names, never local paths (run files of older versions recorded them).
            backbone=backbone_display_name(run.get("backbone") or config.get("backbone_name_or_path")),
            dataset_name=display_name(run.get("dataset")),
            dataset_id=hub_dataset_id(run.get("dataset_id")) or hub_dataset_id(run.get("dataset")),
            license=run.get("license"),
            language=run.get("language"),
            has_processor=any(
                (output_dir / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")
            ),
        )
        for key, value in overrides.items():
            if not hasattr(data, key):
                raise TypeError(f"MMoEModelCardData has no field {key!r}.")
            if value is not None:
                setattr(data, key, value)
        return data

    def update_missing(self, other: MMoEModelCardData) -> MMoEModelCardData:
        """Fill every empty field (``None``, ``{}``, ``[]``, ``False``) from ``other``; return ``self``.

        Training stages are merged, ``self``'s records winning. Used to complete card data collected in memory
        during training with what the output folder holds.
        """
        for f in fields(self):
            if f.name == "training_stages":
                continue
            if not getattr(self, f.name) and getattr(other, f.name):
                setattr(self, f.name, getattr(other, f.name))
        self.training_stages = {**other.training_stages, **self.training_stages}
        return self

    def merge_training_stages(self, stages: dict[str, dict[str, Any]]) -> None:
        """Add stage records (as collected by :class:`ModelCardCallback`); a stage seen again is replaced."""
        self.training_stages.update(stages)

    # ------------------------------------------------------------------ derived values
    @property
    def method(self) -> str:
        """The run's method, ``"mmoe"`` or ``"i2moe"``: the saved model's ``model_type`` when it is one of them
        (the weights are what the card describes), else ``eval_results["method"]``, else ``"mmoe"``."""
        model_type = self.config.get("model_type")
        if model_type in MIXTURE_NAMES:
            return str(model_type)
        method = self.eval_results.get("method")
        return str(method) if method in MIXTURE_NAMES else "mmoe"

    @property
    def is_i2moe(self) -> bool:
        return self.method == "i2moe"

    @property
    def mixture_name(self) -> str:
        """Display name of the mixture: ``"MMoE (router fusion)"`` or ``"I2MoE (reweighted experts)"``."""
        return mixture_name({"method": self.method})

    @property
    def mixture_label(self) -> str:
        """Short name of the mixture, ``"MMoE"`` or ``"I2MoE"``: model name, result rows, plot legends."""
        return self.mixture_name.split(" (")[0]

    @property
    def experts(self) -> list[str]:
        """Expert names, from the config (default: the three MMoE interactions; for I2MoE, the experts of the
        evaluation results or of the configured modalities)."""
        if self.config.get("experts"):
            return list(self.config["experts"])
        if self.is_i2moe:
            return list(self.eval_results.get("experts") or i2moe_expert_names(self.modalities))
        return list(DEFAULT_EXPERTS)

    @property
    def modalities(self) -> list[str]:
        """I2MoE's modalities (``config.json``; default ``["caption", "text"]`` as in ``I2MoEConfig``)."""
        return list(self.config.get("modalities") or ["caption", "text"])

    @property
    def backbone_type(self) -> str | None:
        """The backbone's ``model_type`` (``"bert"``, ``"qwen2"``, ...), when known."""
        backbone_config = self.config.get("backbone_config") or {}
        return backbone_config.get("model_type") if isinstance(backbone_config, dict) else None

    @property
    def seeds(self) -> list[int]:
        """Seeds the results average over (``eval_results.json`` first, then ``mmoe_run.json``)."""
        return list(self.eval_results.get("seeds") or self.run.get("seeds") or [])

    @property
    def root_seed(self) -> int | None:
        """With several seeds, the seed whose weights the folder holds (``root_seed`` of the run's files)."""
        value = self.eval_results.get("root_seed", self.run.get("root_seed"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def root_seed_reason(self) -> str | None:
        """Why :attr:`root_seed` was chosen, as recorded by the pipeline."""
        value = self.eval_results.get("root_seed_reason") or self.run.get("root_seed_reason")
        return str(value) if value else None

    @property
    def dataset_label(self) -> str | None:
        """How the card names the training data: :attr:`dataset_name` (a local path by its final component only),
        else :attr:`dataset_id`."""
        return display_name(self.dataset_name) or self.dataset_id

    def resolved_base_model(self) -> str | None:
        """``base_model`` for the metadata: the explicit field, else the backbone when it is (or its folder shows)
        a Hub id."""
        if self.base_model:
            return self.base_model
        for candidate in (self.backbone, self.run.get("backbone"), self.config.get("backbone_name_or_path")):
            shown = backbone_display_name(candidate)
            if is_hub_model_id(shown):
                return shown
        return None

    def resolved_model_name(self) -> str:
        """Pretty model name, used as the card title and the ``model-index`` name."""
        if self.model_name:
            return self.model_name
        backbone = self.resolved_base_model() or self.backbone_type or "backbone"
        name = f"{self.mixture_label} ({backbone.split('/')[-1]})"
        dataset = self.dataset_label
        return f"{name} on {dataset}" if dataset else name

    def widget_text(self) -> str | None:
        """The ``widget:`` example: the training template filled with example column values; ``None`` without a
        template or when the model also reads an image (``image_column``, a processor)."""
        if self.has_processor or self.hyperparameters.get("image_column"):
            return None
        return formatting.example_text(self.hyperparameters.get("text_template"))

    def resolved_tags(self) -> list[str]:
        """:data:`DEFAULT_TAGS`, the method's tags, the backbone family and the user's tags, without duplicates."""
        tags = list(DEFAULT_TAGS[:1]) + list(METHOD_TAGS.get(self.method, ())) + list(DEFAULT_TAGS[1:])
        if self.backbone_type:
            tags.append(self.backbone_type)
        if self.training_stages:
            tags.append("generated_from_trainer")
        tags.extend(self.tags)
        return list(dict.fromkeys(tags))

    # ------------------------------------------------------------------ metadata
    def eval_result_entries(self) -> list[EvalResult]:
        """One :class:`~huggingface_hub.EvalResult` per (deployable system, metric) found in ``eval_results.json``.

        The deployable systems (:data:`~mmoe.hub_cards.formatting.DEPLOYABLE_SYSTEMS`) are the run's mixture (key
        ``mmoe`` for both methods) and the single-model ``baseline`` it is compared with; the fusion rules, the oracle
        and the experts alone are ablations, shown in the card's body only. As in the Hub's model-index spec, the
        system is named by the metric's ``name`` (``"MMoE F1"``, ``"Baseline (single model) F1"``) and ``config``
        (the metric's own configuration) is left out. Values are the numbers of ``eval_results.json`` unchanged
        (means over seeds when several seeds ran).
        """
        dataset_name = self.dataset_label or "custom"
        dataset_type = self.dataset_id or formatting.slugify(dataset_name)
        split = self.eval_results.get("split")
        entries: list[EvalResult] = []
        systems = formatting.result_systems(self.eval_results, self.mixture_label)
        for _, label, block in sorted(
            (system for system in systems if system[0] in formatting.DEPLOYABLE_SYSTEMS),
            key=lambda system: system[0] != "mmoe",  # the model itself first, then its baseline
        ):
            for metric in METRICS:
                value = block.get(metric)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                entries.append(
                    EvalResult(
                        task_type="text-classification",
                        task_name="Multimodal classification",
                        dataset_type=dataset_type,
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type=metric,
                        metric_value=value,
                        metric_name=f"{label} {formatting.METRIC_LABELS[metric]}",
                    )
                )
        return entries

    def to_card_data(self) -> ModelCardData:
        """The ``huggingface_hub.ModelCardData`` of the YAML header."""
        eval_results = self.eval_result_entries()
        widget = self.widget_text()
        return ModelCardData(
            language=self.language,
            license=self.license,
            library_name=self.library_name,
            pipeline_tag=self.pipeline_tag,
            tags=self.resolved_tags(),
            base_model=self.resolved_base_model(),
            datasets=[self.dataset_id] if self.dataset_id else None,
            metrics=list(METRICS) if eval_results else None,
            # ModelCardData keeps a bare `model_name` key unless eval results turn it into the model-index.
            model_name=self.resolved_model_name() if eval_results else None,
            eval_results=eval_results or None,
            widget=[{"text": widget}] if widget else None,
        )

    def to_metadata(self) -> dict[str, Any]:
        """The YAML metadata as a dict (``model-index`` included when there are results)."""
        return self.to_card_data().to_dict()
