"""Resuming an output folder: stages are redone exactly when what they depend on changed, records are atomic,
and a broken or partial stage counts as not done."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pipeline import TRAINING_STAGES, _precomputed_dataset, _tiny_args

from mmoe.training.cli import train
from mmoe.training.records import STAGE_DONE, changed_inputs, read_stage_record, stage_fingerprint
from mmoe.training.stages import common

STAGES = ("categorize", "baseline", "experts", "router")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_bert_dir) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("resume")
    data = _precomputed_dataset(root / "data")
    out = root / "out"
    results = train(_tiny_args(tiny_bert_dir, data, out))
    return data, out, results


def _copy(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return copy


def _trained_parts(monkeypatch) -> list[str]:
    """Record which parts (baseline, each expert, router) a run trains."""
    trained: list[str] = []
    original = common.train_stage

    def recording(ctx, model, name, *rest, **kw):
        trained.append(name.removeprefix("experts/"))  # an expert's run is named experts/<expert>
        return original(ctx, model, name, *rest, **kw)

    for module in TRAINING_STAGES:
        monkeypatch.setattr(module, "train_stage", recording)
    return trained


def _fingerprints(out: Path) -> dict[str, str]:
    return {stage: read_stage_record(out / stage)["fingerprint"] for stage in STAGES}


def test_a_record_names_its_inputs_and_fingerprint(first_run):
    _, out, _ = first_run
    for stage in STAGES:
        record = json.loads((out / stage / STAGE_DONE).read_text())
        assert record["fingerprint"] == stage_fingerprint(record["inputs"])
        assert record["inputs"]["stage"] == stage
    # each stage depends on the one before it
    records = {stage: read_stage_record(out / stage) for stage in STAGES}
    for before, after in zip(STAGES, STAGES[1:]):
        assert records[after]["inputs"]["previous"] == records[before]["fingerprint"]


def test_changed_data_redoes_every_stage(first_run, tmp_path, tiny_bert_dir, monkeypatch, caplog):
    data, out, results = first_run
    run = _copy(out, tmp_path)
    old = _fingerprints(run)
    other_data = _precomputed_dataset(tmp_path / "other-data", n_train=36)
    trained = _trained_parts(monkeypatch)
    with caplog.at_level("WARNING", logger="mmoe"):
        again = train(_tiny_args(tiny_bert_dir, other_data, run, "--learning_rate", "0.01"))
    changed = re.search(r"Stage categorize: its inputs changed since it ran \(([^)]*)\)", caplog.text)
    assert changed and "data" in changed.group(1).split(", ")  # the identity of the data names the change
    assert sorted(trained) == sorted(["baseline", "redundancy", "uniqueness", "synergy", "router"])
    assert all(_fingerprints(run)[stage] != old[stage] for stage in STAGES)
    # the results describe the new run: 36 training rows instead of 48
    assert sum(again["interaction_counts"]["train"].values()) == 36
    saved_run = json.loads((run / "mmoe_run.json").read_text())
    # the run file names the data by its folder's name, never by a local absolute path
    assert saved_run["dataset"] == other_data.name and saved_run["hyperparameters"]["learning_rate"] == 0.01


def test_changed_lora_rank_redoes_training_without_a_size_mismatch(first_run, tmp_path, tiny_bert_dir, monkeypatch,
                                                                   caplog):
    data, out, _ = first_run
    run = _copy(out, tmp_path)
    categorize_record = (run / "categorize" / STAGE_DONE).read_text()
    trained = _trained_parts(monkeypatch)
    args = _tiny_args(tiny_bert_dir, data, run)
    args[args.index("--lora_r") + 1] = "4"
    with caplog.at_level("WARNING", logger="mmoe"):
        train(args)
    assert "model.lora_r" in caplog.text
    assert "baseline" in trained and "router" in trained
    assert (run / "categorize" / STAGE_DONE).read_text() == categorize_record  # categorization did not change
    assert json.loads((run / "config.json").read_text())["lora_r"] == 4
    lora_a = [v for k, v in load_file(str(run / "baseline" / "baseline.safetensors")).items() if "lora_A" in k]
    assert lora_a and all(t.shape[0] == 4 for t in lora_a)


@pytest.mark.parametrize(
    "option",
    [("--router_learning_rate", "0.01"), ("--router_input", "backbone"), ("--router_objective", "interaction")],
)
def test_a_router_option_redoes_only_the_router(first_run, tmp_path, tiny_bert_dir, monkeypatch, option):
    data, out, _ = first_run
    run = _copy(out, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (run / "baseline").glob("*.safetensors")}
    trained = _trained_parts(monkeypatch)
    train(_tiny_args(tiny_bert_dir, data, run, *option))
    assert trained == ["router"]
    assert stamps == {p: p.stat().st_mtime_ns for p in (run / "baseline").glob("*.safetensors")}


@pytest.mark.parametrize("damage", ["truncated", "empty", "old-format", "missing-weights"])
def test_a_broken_stage_counts_as_not_done(first_run, tmp_path, tiny_bert_dir, monkeypatch, damage):
    data, out, results = first_run
    run = _copy(out, tmp_path)
    record = run / "baseline" / STAGE_DONE
    if damage == "truncated":
        record.write_text(record.read_text()[:40])
    elif damage == "empty":
        record.write_text("")
    elif damage == "old-format":
        record.write_text(json.dumps({"selected_epoch": 1.0}))
    else:
        (run / "baseline" / "baseline.safetensors").unlink()
    trained = _trained_parts(monkeypatch)
    again = train(_tiny_args(tiny_bert_dir, data, run))
    assert trained[0] == "baseline"
    assert read_stage_record(run / "baseline") is not None
    # the same inputs and seed give the same model again
    assert again["ce_baseline"] == pytest.approx(results["ce_baseline"], abs=1e-5)


def test_experts_stage_survives_when_every_expert_keeps_the_baseline(tmp_path, tiny_bert_dir):
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, data, out, "--min_expert_examples", "1000"))
    baseline = load_file(str(out / "baseline" / "baseline.safetensors"))
    summary = read_stage_record(out / "experts")["summary"]
    for expert in ("redundancy", "uniqueness", "synergy"):
        assert summary[expert]["fallback"] == "baseline"
        weights = load_file(str(out / "experts" / f"{expert}.safetensors"))
        assert set(weights) == set(baseline) and all(torch.equal(weights[k], baseline[k]) for k in baseline)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary files behind


def test_changed_inputs_names_nested_keys():
    old = {"seed": 0, "model": {"lora_r": 2, "backbone": "x"}, "data": {"a": 1}}
    new = {"seed": 0, "model": {"lora_r": 4, "backbone": "x"}, "data": {"a": 1}, "extra": True}
    assert changed_inputs(old, new) == ["extra", "model.lora_r"]
