"""Devices, precision and processes: predictions through the Trainer, the device guard, several processes.

The CUDA tests run only where a GPU is present (``scripts/gpu_check.sh`` runs them); on CPU they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from test_pipeline import _precomputed_dataset, _tiny_args
from transformers import AutoTokenizer, TrainingArguments

from mmoe import MMoEForSequenceClassification
from mmoe.data.collators import MMoECollator
from mmoe.testing import randomize_lora_weights
from mmoe.training.cli import train
from mmoe.training.evaluation import predict
from mmoe.training.runtime import check_on_device, to_device
from mmoe.training.trainer_utils import stage_arguments

REPO = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_check.sh)")


def _rows(n: int) -> Dataset:
    words = ["sunny", "snowy", "warm", "cold", "lovely", "awful", "day", "street"]
    rng = np.random.default_rng(1)
    return Dataset.from_dict({
        "text": [" ".join(rng.choice(words, 2 + i % 5)) for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "interaction": [("redundancy", "uniqueness", "synergy")[i % 3] for i in range(n)],
    })


def test_predict_gives_every_row_once_and_matches_a_direct_forward(tmp_path, tiny_bert_dir):
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, lora_r=2,
                                                        router_hidden_size=8)
    randomize_lora_weights(model, seed=3)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    collator = MMoECollator(tokenizer, text_template="{text}", max_length=16, interaction_column="interaction")
    rows = _rows(13)  # not a multiple of the batch size: the last batch is short
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True)
    out = predict(model, rows, collator, args, tmp_path)
    assert out["logits"].shape == (13, 2) and out["expert_logits"].shape == (13, 3, 2)
    assert out["router_weights"].shape == (13, 3)
    # independent: one row at a time, straight through forward
    with torch.no_grad():
        for i in range(13):
            batch = collator([rows[i]])
            direct = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids"))
            np.testing.assert_allclose(out["expert_logits"][i], direct.expert_logits[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(out["router_weights"][i], direct.router_weights[0].numpy(), atol=1e-5)


def test_device_guard_names_the_misplaced_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    check_on_device(model, "cpu", "ok")  # everything on the CPU
    model[1].to("meta")
    with pytest.raises(RuntimeError, match=r"stage x: 2 parameter\(s\) are not on cpu.*1\.weight"):
        check_on_device(model, "cpu", "stage x")


def test_to_device_moves_nested_state():
    state = {"a": torch.ones(2), "b": [torch.zeros(1), {"c": torch.ones(1)}], "n": 3}
    moved = to_device(state, "meta")
    assert moved["a"].device.type == "meta" and moved["b"][1]["c"].device.type == "meta" and moved["n"] == 3


def test_stage_arguments_keep_precision_and_use_non_reentrant_checkpointing(tmp_path):
    base = TrainingArguments(output_dir=str(tmp_path), gradient_checkpointing=True, report_to="none", use_cpu=True)
    args = stage_arguments(base, tmp_path / "stage")
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert args.use_cpu and args.save_strategy == "no" and not args.push_to_hub
    router = stage_arguments(base, tmp_path / "router", gradient_checkpointing=False)
    assert not router.gradient_checkpointing


def test_backbone_load_options_reach_from_pretrained(tmp_path, tiny_bert_dir, monkeypatch):
    """--backbone_dtype and --attn_implementation become from_pretrained keyword arguments."""
    from mmoe.training.backbones import backbone_load_kwargs

    seen: list[dict] = []
    original = MMoEForSequenceClassification.from_backbone.__func__

    def recording(cls, name, **kwargs):
        seen.append(kwargs.get("backbone_kwargs"))
        return original(cls, name, **kwargs)

    monkeypatch.setattr(MMoEForSequenceClassification, "from_backbone", classmethod(recording))
    data = _precomputed_dataset(tmp_path / "data")
    train(_tiny_args(tiny_bert_dir, data, tmp_path / "out", "--backbone_dtype", "float32",
                     "--attn_implementation", "eager", "--max_steps", "1"))
    assert seen and all(kw == {"dtype": torch.float32, "attn_implementation": "eager"} for kw in seen)
    assert backbone_load_kwargs(type("A", (), {"backbone_dtype": "auto", "attn_implementation": None})) == {
        "dtype": "auto"}


def _launch(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m",
               "mmoe.training.cli", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _numbers(results: dict, prefix: str = "") -> dict[str, float]:
    """Every number of eval_results.json by path, without run times and epoch positions."""
    out: dict[str, float] = {}
    for key, value in results.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_numbers(value, path))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not any(word in key for word in ("runtime", "per_second", "epoch")):
                out[path] = float(value)
    return out


def test_two_processes_match_one(tmp_path, tiny_bert_dir):
    """DDP on CPU (gloo): only the main process writes, every process agrees on finished stages, evaluation sees
    every row once, and the results match one process on the same data.

    Tolerances: evaluating the same trained stages in two processes matches one process to 1e-5. Training from
    scratch in two processes (2 x 8 rows per step) against one process (16 rows per step) differs in sampling
    order and dropout masks, so its cross-entropies are compared to 1e-3 and its accuracies to 2 rows of 24.
    """
    data = _precomputed_dataset(tmp_path / "data")
    # 5e-5 (the Trainer's full fine-tuning rate; mmoe's default is LoRA's 5e-4): three small steps keep the two runs'
    # different dropout masks within the tolerances below
    common = ["--max_steps", "3", "--lora_dropout", "0", "--router_dropout", "0", "--learning_rate", "5e-5",
              "--use_cpu", "true"]
    single = tmp_path / "single"
    train(_tiny_args(tiny_bert_dir, data, single, "--per_device_train_batch_size", "16", *common))
    one = json.loads((single / "eval_results.json").read_text())

    # 1. the finished stages, evaluated again by two processes
    resumed = tmp_path / "resumed"
    shutil.copytree(single, resumed)
    stamps = {p: p.stat().st_mtime_ns for p in resumed.rglob("*.safetensors") if "seed" not in p.name}
    done = _launch(_tiny_args(tiny_bert_dir, data, resumed, "--per_device_train_batch_size", "16", *common), 2)
    assert done.returncode == 0, done.stderr[-3000:]
    # the main process decides for all: 4 stages skipped, and no process trained (the stage files are untouched)
    assert done.stderr.count("already finished with the same inputs") == 4
    stage_stamps = {p: s for p, s in stamps.items() if p.parent != resumed}
    assert stage_stamps == {p: p.stat().st_mtime_ns for p in stage_stamps}
    two = json.loads((resumed / "eval_results.json").read_text())
    a, b = _numbers(one), _numbers(two)
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) <= 1e-5 for k in a), {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-5}
    assert sum(two["interaction_counts"]["test"].values()) == 24  # every test row counted once

    # 2. a whole run from scratch in two processes
    fresh = tmp_path / "fresh"
    run = _launch(_tiny_args(tiny_bert_dir, data, fresh, "--per_device_train_batch_size", "8", *common), 2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("MMoE results on the test split") == 1  # one process prints and writes
    assert not list(fresh.rglob("*.tmp"))
    scratch = json.loads((fresh / "eval_results.json").read_text())
    for key in ("ce_baseline", "ce_moe"):
        assert scratch[key] == pytest.approx(one[key], abs=1e-3)
    for system in ("baseline", "mmoe"):
        assert abs(scratch[system]["accuracy"] - one[system]["accuracy"]) <= 2 / 24 + 1e-9


def test_processes_that_do_not_form_a_group_are_refused(tmp_path, tiny_bert_dir):
    """Two processes launched without --use_cpu on a CPU machine would each train and write alone."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the processes form an NCCL group without --use_cpu")
    data = _precomputed_dataset(tmp_path / "data")
    run = _launch(_tiny_args(tiny_bert_dir, data, tmp_path / "out"), 2)
    assert run.returncode != 0
    assert "pass --use_cpu" in run.stderr
    assert not (tmp_path / "out" / "baseline").exists()


def test_pipeline_in_bf16_with_a_bf16_backbone_on_cpu(tmp_path, tiny_bert_dir):
    """--bf16 (autocast) with --backbone_dtype bfloat16: every stage trains and evaluates; results are finite."""
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    results = train(_tiny_args(tiny_bert_dir, data, out, "--bf16", "true", "--backbone_dtype", "bfloat16",
                               "--use_cpu", "true", "--max_steps", "2"))
    assert np.isfinite(results["ce_moe"]) and np.isfinite(results["ce_baseline"])
    assert json.loads((out / "config.json").read_text())["backbone_config"]["dtype"] == "bfloat16"


@needs_cuda
def test_pipeline_on_cuda_in_bf16(tmp_path, tiny_bert_dir):
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    results = train(_tiny_args(tiny_bert_dir, data, out, "--bf16", "true", "--backbone_dtype", "bfloat16"))
    assert np.isfinite(results["ce_moe"]) and (out / "eval_results.json").exists()
    model = MMoEForSequenceClassification.from_pretrained(out, dtype=torch.bfloat16).to("cuda").eval()
    check_on_device(model, "cuda", "reloaded model")
    assert next(model.router.parameters()).dtype == torch.float32  # heads and router stay float32


@needs_cuda
def test_predict_on_cuda_matches_cpu(tmp_path, tiny_bert_dir):
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, lora_r=2,
                                                        router_hidden_size=8)
    randomize_lora_weights(model, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    collator = MMoECollator(tokenizer, text_template="{text}", max_length=16, interaction_column="interaction")
    rows = _rows(10)
    cpu = predict(model, rows, collator, TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                           report_to="none"), tmp_path)
    gpu = predict(model, rows, collator, TrainingArguments(output_dir=str(tmp_path), report_to="none"), tmp_path)
    check_on_device(model, "cuda", "model after Trainer.predict")
    np.testing.assert_allclose(gpu["expert_logits"], cpu["expert_logits"], atol=1e-3)
