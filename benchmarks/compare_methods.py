"""Baseline, MMoE and I2MoE on the same data, backbone and seeds: the README's comparison tables.

    python benchmarks/compare_methods.py --root outputs/compare-demo --seeds 0 1 2 -- --preset demo
    python benchmarks/compare_methods.py --root outputs/compare-mustard --seeds 0 1 2 -- \\
        --dataset mustard --data_dir ../shared/data/mustard --num_train_epochs 5 --max_length 128 \\
        --learning_rate 5e-4 --per_device_train_batch_size 16

Everything after ``--`` is passed to ``mmoe-train``; ``--report_only`` reads finished runs instead. Per seed,
``<root>/mmoe/seed-<N>`` is a normal MMoE run (the defaults: the router reads its own LoRA adapter and is trained
for the fused prediction). Other runs start from a copy of its stages, which the stage fingerprints recognise and
skip:

* ``<root>/mmoe-interaction/seed-<N>``: the paper's router objective (``--router_objective interaction``) over the
  same categorization, baseline and experts; only the router is trained;
* ``<root>/mmoe-experts-router/seed-<N>``: the router on the experts' pooled states (``--router_input experts``,
  no adapter of its own), trained for the fused prediction; only the router is trained;
* ``<root>/i2moe/seed-<N>``: I2MoE over the same categorization and baseline; only the ``i2moe`` stage is trained.

``--router_variants`` picks which of the two router runs to make (default both); ``--no_i2moe`` skips I2MoE.
Reruns skip every finished stage. Prints one JSON line per seed and system (``system``: baseline | mmoe |
mmoe_interaction | mmoe_experts_router | i2moe | oracle; ``split``; the metric block; accuracy and macro-F1 per
gold interaction type where the data has them; the categorization accuracy), then one line per system with the
mean and population std over seeds, the gap closed (``(system - baseline) / (oracle - baseline)`` in accuracy,
on the means) and for I2MoE the mean expert weights by gold type.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mmoe.training.cli import train

METRICS = ("accuracy", "macro_f1", "balanced_accuracy")


# Router runs over the MMoE run's categorization, baseline and experts: folder -> mmoe-train flags.
ROUTER_VARIANTS = {
    "interaction": ("mmoe-interaction", ["--router_objective", "interaction"]),
    "experts": ("mmoe-experts-router", ["--router_input", "experts"]),
}
# Run folders under --root -> the system names of the JSON lines.
RUN_SYSTEMS = {"i2moe": "i2moe", "mmoe-interaction": "mmoe_interaction", "mmoe-experts-router": "mmoe_experts_router"}


def run_seed(
    root: Path, seed: int, train_args: list[str], router_variants: list[str], i2moe: bool = True
) -> dict[str, dict[str, Any]]:
    common = [*train_args, "--seed", str(seed), "--disable_tqdm", "true"]
    mmoe_dir = root / "mmoe" / f"seed-{seed}"
    results = {"mmoe": train([*common, "--output_dir", str(mmoe_dir)])}
    variants = {"i2moe": (("categorize", "baseline"), ["--method", "i2moe"])} if i2moe else {}
    for variant in router_variants:
        folder, flags = ROUTER_VARIANTS[variant]
        variants[folder] = (("categorize", "baseline", "experts"), flags)
    for name, (stages, flags) in variants.items():
        run_dir = root / name / f"seed-{seed}"
        for stage in stages:  # the same stages as the MMoE run: recognised by their fingerprints and skipped
            if not (run_dir / stage).exists():
                shutil.copytree(mmoe_dir / stage, run_dir / stage)
        results[name] = train([*common, *flags, "--output_dir", str(run_dir)])
    return results


def rows_of(results: dict[str, dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    mmoe = results["mmoe"]
    systems = {"baseline": (mmoe, "baseline"), "mmoe": (mmoe, "mmoe")}
    for name, system in RUN_SYSTEMS.items():
        if name in results:  # with --report_only, a seed may lack a finished run of these
            systems[system] = (results[name], "mmoe")
    rows = []
    for system, (source, key) in systems.items():
        row = {"seed": seed, "system": system, "split": source["split"],
               **{m: source[key][m] for m in METRICS}}
        gold = source.get("by_gold_interaction", {}).get(key, {})
        row["gold_accuracy"] = {g: block["accuracy"] for g, block in gold.items()}
        row["gold_macro_f1"] = {g: block["macro_f1"] for g, block in gold.items()}
        if system == "i2moe":
            interpretation = source.get("interpretation", {})
            row["i2moe_weights_by_gold"] = interpretation.get("weights_by_gold_interaction")
            row["synergy_weight_highest_on_gold_synergy"] = interpretation.get(
                "synergy_weight_highest_on_gold_synergy"
            )
            row["accuracy_when_experts_disagree"] = interpretation.get("accuracy_when_experts_disagree")
        rows.append(row)
    oracle = mmoe["fusion"]["oracle"]
    oracle_row = {"seed": seed, "system": "oracle", "split": mmoe["split"], **{m: oracle[m] for m in METRICS}}
    oracle_gold = mmoe.get("by_gold_interaction", {}).get("oracle", {})
    oracle_row["gold_accuracy"] = {g: block["accuracy"] for g, block in oracle_gold.items()}
    oracle_row["gold_macro_f1"] = {g: block["macro_f1"] for g, block in oracle_gold.items()}
    synergy_expert = mmoe.get("experts_by_gold_interaction", {}).get("synergy", {}).get("synergy")
    if synergy_expert:  # the synergy expert alone on gold synergy rows: is the relation learnable?
        oracle_row["synergy_expert_on_gold_synergy_accuracy"] = synergy_expert["accuracy"]
    rows.append(oracle_row)
    for row in rows:
        if "categorization" in mmoe:
            row["categorization_accuracy"] = mmoe["categorization"]["accuracy"]
    return rows


SYSTEMS = ("baseline", "mmoe", "mmoe_interaction", "mmoe_experts_router", "i2moe", "oracle")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return round(float(np.mean(values)), 4), round(float(np.std(values)), 4)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = {}
    for system in SYSTEMS:
        mine = [row for row in rows if row["system"] == system]
        if not mine:
            continue
        line: dict[str, Any] = {"system": system, "seeds": [row["seed"] for row in mine]}
        for metric in (*METRICS, "categorization_accuracy", "synergy_expert_on_gold_synergy_accuracy"):
            if all(metric in row for row in mine):
                line[metric], line[f"{metric}_std"] = _mean_std([row[metric] for row in mine])
        for block in ("gold_accuracy", "gold_macro_f1"):
            gold = [row.get(block) or {} for row in mine]
            for name in sorted(set().union(*gold)):
                key = f"gold_{name}_{block.removeprefix('gold_')}"
                line[key], line[f"{key}_std"] = _mean_std([g[name] for g in gold if name in g])
        weights = [row["i2moe_weights_by_gold"] for row in mine if row.get("i2moe_weights_by_gold")]
        if weights:
            line["weights_by_gold"] = {
                g: {e: round(float(np.mean([w[g][e] for w in weights])), 4) for e in weights[0][g]}
                for g in weights[0]
            }
        out[system] = line
    base, oracle = out["baseline"]["accuracy"], out["oracle"]["accuracy"]
    for system in out.keys() - {"baseline", "oracle"}:  # gap closed on the means
        gap = (out[system]["accuracy"] - base) / (oracle - base) if oracle != base else None
        out[system]["gap_closed"] = None if gap is None else round(gap, 3)
    return list(out.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="Folder of the runs (mmoe/seed-N, i2moe/seed-N).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report_only", action="store_true",
                        help="Train nothing: read the eval_results.json of finished runs under --root.")
    parser.add_argument("--router_variants", nargs="*", choices=list(ROUTER_VARIANTS), default=list(ROUTER_VARIANTS),
                        help="Router runs over the same experts: interaction (the paper's objective), experts (the "
                        "router on the experts' states); none for neither.")
    parser.add_argument("--no_i2moe", action="store_true", help="Skip the I2MoE runs.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the mmoe-train options.")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    root = Path(args.root)
    rows = []
    for seed in args.seeds:
        if args.report_only:
            results = {method: json.loads(path.read_text())
                       for method in ("mmoe", *RUN_SYSTEMS)
                       if (path := root / method / f"seed-{seed}" / "eval_results.json").is_file()}
        else:
            results = run_seed(root, seed, train_args, router_variants=args.router_variants, i2moe=not args.no_i2moe)
        rows += rows_of(results, seed)
    for row in rows:
        print(json.dumps(row))
    for line in summary(rows):
        print(json.dumps({"summary": True, **line}))


if __name__ == "__main__":
    main()
