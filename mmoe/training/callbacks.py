"""A ``TrainerCallback`` that records, while a Trainer runs, what the model card reports about training.

Like sentence-transformers' ``ModelCardCallback``: attach one per pipeline stage; it keeps the stage's
non-default ``TrainingArguments``, its training/validation losses and a short summary (steps, runtime, best
metric). Records go to a shared card-data object (anything with ``merge_training_stages``, such as
:class:`~mmoe.hub_cards.MMoEModelCardData`) and, when ``output_dir`` is given, are merged into
``<output_dir>/mmoe_training_logs.json`` so a resumed run or ``mmoe-card`` sees them too.

It lives in ``training/`` (the pipeline attaches it to every stage's ``Trainer``) and is re-exported as
``mmoe.hub_cards.ModelCardCallback``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .run_files import TRAINING_LOGS_FILE, read_json


class StageRecordSink(Protocol):
    """What a callback reports to: :class:`mmoe.hub_cards.MMoEModelCardData` is one."""

    def merge_training_stages(self, stages: dict[str, dict[str, Any]]) -> None: ...

IGNORED_ARGUMENTS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "run_name",
        "report_to",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        "overwrite_output_dir",
        "disable_tqdm",
        "local_rank",
        "dataloader_num_workers",
        "logging_first_step",
        "logging_steps",
        "logging_strategy",
        "save_strategy",
        "save_steps",
        "save_only_model",
        "use_cpu",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "save_total_limit",
        "do_train",
        "do_eval",
        "do_predict",
        "license",
        "language",
    }
)
"""``TrainingArguments`` fields that describe the machine or the bookkeeping, not the training recipe."""


def _plain(value: Any) -> Any:
    """JSON-friendly form of an argument value (enums by value, unknown objects by ``str``)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return _plain(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return _plain(f.default_factory())  # type: ignore[misc]
    return dataclasses.MISSING


def _is_default(name: str, value: Any, default: Any) -> bool:
    """Whether ``value`` is what ``TrainingArguments.__post_init__`` makes of the field default ``default``.

    Defaults are read from the dataclass fields, never from a fresh ``TrainingArguments`` instance: building
    one resets accelerate's global state and breaks a Trainer that is running.
    """
    if value == default or (not value and not default and default is not dataclasses.MISSING):
        return True  # None -> False / "" -> [] normalisations
    if name == "accelerator_config" and default is None and isinstance(value, dict):
        from transformers.trainer_pt_utils import AcceleratorConfig

        defaults = _plain(AcceleratorConfig().to_dict())
        return all(defaults.get(key) == item for key, item in value.items())
    return False


def non_default_arguments(args: TrainingArguments) -> dict[str, Any]:
    """The fields of ``args`` (any ``TrainingArguments`` subclass) that differ from their defaults.

    Tokens and bookkeeping fields (:data:`IGNORED_ARGUMENTS`) are left out.
    """
    values = args.to_dict()
    result: dict[str, Any] = {}
    for f in dataclasses.fields(args):
        name = f.name
        if name in IGNORED_ARGUMENTS or name.endswith("token") or name not in values or name.startswith("_"):
            continue
        value = _plain(values[name])
        if not _is_default(name, value, _field_default(f)):
            result[name] = value
    return result


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value


class ModelCardCallback(TrainerCallback):
    """Collect one pipeline stage's training details for the model card.

    Args:
        card_data: shared card data to update in memory (optional).
        stage: name of the stage in the card, e.g. ``"baseline"``, ``"experts/synergy"``, ``"router"``.
        output_dir: the pipeline's root output folder; the record is merged into its
            ``mmoe_training_logs.json`` when training ends (optional).

    Example::

        callback = ModelCardCallback(stage="router", output_dir=args.output_dir)
        trainer = Trainer(model=model, args=training_args, ..., callbacks=[callback])
    """

    def __init__(
        self,
        card_data: StageRecordSink | None = None,
        stage: str = "train",
        output_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.card_data = card_data
        self.stage = stage
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.record: dict[str, Any] = {"hyperparameters": {}, "logs": [], "summary": {}}
        self._start: float | None = None

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Record the stage's non-default training arguments and the model class."""
        self.record["hyperparameters"] = non_default_arguments(args)
        model = kwargs.get("model")
        if model is not None:
            self.record["summary"]["model_class"] = type(model).__name__
        self._start = time.time()
        self._publish()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Append the training loss of a logging step."""
        if logs and "loss" in logs:
            self._row(state)["Training Loss"] = _round(logs["loss"])

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Append the validation loss and metrics (``eval_*`` keys, runtimes left out)."""
        row = self._row(state)
        for key, value in (metrics or {}).items():
            if not key.startswith("eval_") or key.endswith(("_runtime", "_per_second")) or key == "eval_epoch":
                continue
            name = key[len("eval_") :]
            row["Validation Loss" if name == "loss" else f"Validation {name}"] = _round(value)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Record steps, epochs, runtime and best checkpoint; write the record to ``output_dir``."""
        summary = self.record["summary"]
        summary["global_step"] = state.global_step
        if state.epoch is not None:
            summary["epochs"] = _round(float(state.epoch))
        if self._start is not None:
            summary["train_runtime_s"] = round(time.time() - self._start, 1)
        if state.best_metric is not None:
            summary["best_metric"] = _round(state.best_metric)
            summary["metric_for_best_model"] = args.metric_for_best_model
        if state.best_model_checkpoint:
            summary["best_model_checkpoint"] = Path(state.best_model_checkpoint).name
        self._publish()
        if self.output_dir is not None and state.is_world_process_zero:  # one writer under several processes
            self.save(self.output_dir)

    # ------------------------------------------------------------------ storage
    def _row(self, state: TrainerState) -> dict[str, Any]:
        logs: list[dict[str, Any]] = self.record["logs"]
        if logs and logs[-1].get("Step") == state.global_step:
            return logs[-1]
        epoch = _round(float(state.epoch)) if state.epoch is not None else None
        logs.append({"Epoch": epoch, "Step": state.global_step})
        return logs[-1]

    def _publish(self) -> None:
        if self.card_data is not None:
            self.card_data.merge_training_stages({self.stage: self.record})

    def save(self, output_dir: str | os.PathLike[str]) -> Path:
        """Merge this stage's record into ``<output_dir>/mmoe_training_logs.json``; return the file path."""
        path = Path(output_dir) / TRAINING_LOGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = read_json(path)
        stages = dict(existing.get("stages") or {})
        stages[self.stage] = self.record
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"stages": stages}, indent=2, default=str), encoding="utf-8")
        tmp.replace(path)
        return path
