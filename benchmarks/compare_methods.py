"""Baseline, MMoE and I2MoE on the same data, backbone and seeds: the README's comparison tables.

    python benchmarks/compare_methods.py --root outputs/compare-demo --seeds 0 1 2 -- --preset demo
    python benchmarks/compare_methods.py --root outputs/compare-mustard --seeds 0 1 2 -- \\
        --dataset mustard --data_dir ../shared/data/mustard --num_train_epochs 5 --max_length 128 \\
        --learning_rate 5e-4 --per_device_train_batch_size 16

Everything after ``--`` is passed to ``mmoe-train``; ``--report_only`` reads finished runs instead. Per seed,
``<root>/mmoe/seed-<N>`` is a normal MMoE run; the I2MoE run ``<root>/i2moe/seed-<N>`` starts from a copy of that
run's categorize and baseline stages (the same categorization and the same baseline, which the stage fingerprints
recognise and skip), then trains only the ``i2moe`` stage. Reruns skip every finished stage.

Prints one JSON line per seed and system (``system``: baseline | mmoe | i2moe | oracle; ``split``; the metric block;
accuracy per gold interaction type where the data has them; the categorization accuracy), then one line per system
with the mean and population std over seeds, and for I2MoE the mean expert weights by gold type.
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


def run_seed(root: Path, seed: int, train_args: list[str]) -> dict[str, dict[str, Any]]:
    mmoe_dir, i2moe_dir = root / "mmoe" / f"seed-{seed}", root / "i2moe" / f"seed-{seed}"
    common = [*train_args, "--seed", str(seed), "--disable_tqdm", "true"]
    mmoe = train([*common, "--output_dir", str(mmoe_dir)])
    for stage in ("categorize", "baseline"):  # the same categorization and baseline for both methods
        if not (i2moe_dir / stage).exists():
            shutil.copytree(mmoe_dir / stage, i2moe_dir / stage)
    i2moe = train([*common, "--method", "i2moe", "--output_dir", str(i2moe_dir)])
    return {"mmoe": mmoe, "i2moe": i2moe}


def rows_of(results: dict[str, dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    mmoe, i2moe = results["mmoe"], results["i2moe"]
    systems = {"baseline": (mmoe, "baseline"), "mmoe": (mmoe, "mmoe"), "i2moe": (i2moe, "mmoe")}
    rows = []
    for system, (source, key) in systems.items():
        row = {"seed": seed, "system": system, "split": source["split"],
               **{m: source[key][m] for m in METRICS}}
        gold = source.get("by_gold_interaction", {}).get(key, {})
        row["gold_accuracy"] = {g: block["accuracy"] for g, block in gold.items()}
        rows.append(row)
    oracle = mmoe["fusion"]["oracle"]
    rows.append({"seed": seed, "system": "oracle", "split": mmoe["split"], **{m: oracle[m] for m in METRICS}})
    for row in rows:
        if "categorization" in mmoe:
            row["categorization_accuracy"] = mmoe["categorization"]["accuracy"]
    interpretation = i2moe.get("interpretation", {})
    rows[2]["i2moe_weights_by_gold"] = interpretation.get("weights_by_gold_interaction")
    rows[2]["synergy_weight_highest_on_gold_synergy"] = interpretation.get("synergy_weight_highest_on_gold_synergy")
    rows[2]["accuracy_when_experts_disagree"] = interpretation.get("accuracy_when_experts_disagree")
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for system in ("baseline", "mmoe", "i2moe", "oracle"):
        mine = [row for row in rows if row["system"] == system]
        line: dict[str, Any] = {"system": system, "seeds": [row["seed"] for row in mine]}
        for metric in METRICS:
            values = [row[metric] for row in mine]
            line[metric] = round(float(np.mean(values)), 4)
            line[f"{metric}_std"] = round(float(np.std(values)), 4)
        gold = [row.get("gold_accuracy") or {} for row in mine]
        for name in sorted(set().union(*gold)) if gold else []:
            values = [g[name] for g in gold if name in g]
            line[f"gold_{name}_accuracy"] = round(float(np.mean(values)), 4)
            line[f"gold_{name}_accuracy_std"] = round(float(np.std(values)), 4)
        weights = [row["i2moe_weights_by_gold"] for row in mine if row.get("i2moe_weights_by_gold")]
        if weights:
            line["weights_by_gold"] = {
                g: {e: round(float(np.mean([w[g][e] for w in weights])), 4) for e in weights[0][g]}
                for g in weights[0]
            }
        out.append(line)
    base, oracle = out[0]["accuracy"], out[3]["accuracy"]
    for line in out[1:3]:  # gap closed on the means: (system - baseline) / (oracle - baseline)
        line["gap_closed"] = round((line["accuracy"] - base) / (oracle - base), 3) if oracle != base else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="Folder of the runs (mmoe/seed-N, i2moe/seed-N).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--report_only", action="store_true",
                        help="Train nothing: read the eval_results.json of finished runs under --root.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the mmoe-train options.")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    root = Path(args.root)
    rows = []
    for seed in args.seeds:
        if args.report_only:
            results = {method: json.loads((root / method / f"seed-{seed}" / "eval_results.json").read_text())
                       for method in ("mmoe", "i2moe")}
        else:
            results = run_seed(root, seed, train_args)
        rows += rows_of(results, seed)
    for row in rows:
        print(json.dumps(row))
    for line in summary(rows):
        print(json.dumps({"summary": True, **line}))


if __name__ == "__main__":
    main()
