"""Loggers and verbosity: every stage logs to ``<output_dir>/runs/<stage>`` under its own run name, nothing goes to
a shared temporary folder, ``--log_level``/``--disable_tqdm`` quiet a run, and each stage announces itself."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_pipeline import _precomputed_dataset, _tiny_args
from transformers import TrainingArguments

from mmoe.training.cli import train
from mmoe.training.trainer_utils import stage_log_dir, stage_run_name

REPO = Path(__file__).resolve().parents[1]
CROSS_FIT = ["--unimodal_source", "trained", "--num_folds", "2", "--unimodal_num_train_epochs", "1",
             "--max_steps", "2"]
"""The unimodal predictors are cross-fitted (two folds per view) even though the data has prediction columns."""

STAGE_LOGS = {"categorize-text-fold0", "categorize-text-fold1", "categorize-vision-fold0", "categorize-vision-fold1",
              "baseline", "experts-redundancy", "experts-uniqueness", "experts-synergy", "router"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _precomputed_dataset(tmp_path_factory.mktemp("logging-data") / "ds")


def test_tensorboard_logs_every_stage_under_output_dir_and_nothing_in_tmp(
    tiny_bert_dir: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("tensorboard")
    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))  # what tempfile.gettempdir() answers
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(shared_tmp))
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="mmoe"):
        train(_tiny_args(tiny_bert_dir, dataset, out, *CROSS_FIT, "--report_to", "tensorboard",
                         "--logging_steps", "1", "--run_name", "tb"))

    runs = out / "runs"
    experts = json.loads((out / "experts" / "stage_complete.json").read_text())["summary"]
    fallbacks = {f"experts-{name}" for name, summary in experts.items() if summary.get("fallback")}
    assert {p.name for p in runs.iterdir()} == STAGE_LOGS - fallbacks and len(fallbacks) < 3
    for stage in STAGE_LOGS - fallbacks:
        assert list((runs / stage).glob("events.out.tfevents*")), f"no event file for {stage}"
    # the Trainer's own output folders are gone: only logs and the stages' results stay
    assert not list(out.rglob("trainer")) and not (out / "categorize" / "folds").exists()
    assert not (out / "evaluation").exists()
    assert list(shared_tmp.iterdir()) == []  # nothing in a shared temporary folder
    assert not Path(tempfile.gettempdir(), "mmoe-crossfit").exists()

    # (4) each stage announces itself, with its rows, and its end, with its time and selection
    messages = [r.getMessage() for r in caplog.records if r.name == "mmoe"]
    assert "Stage baseline: training on 48 rows" in messages
    assert any(m.startswith("Stage baseline: done in ") and "best epoch" in m and "macro_f1" in m for m in messages)
    for stage in ("experts/redundancy", "router", "categorize-text-fold0", "categorize-vision-fold1"):
        assert any(m.startswith(f"Stage {stage}: training on ") and m.endswith(" rows") for m in messages), stage
        assert any(m.startswith(f"Stage {stage}: done in ") for m in messages), stage
    assert "Stage categorize-text-fold0: training on 24 rows" in messages  # half the 48 training rows


def test_report_to_none_leaves_no_log_folders(tiny_bert_dir: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, dataset, out, *CROSS_FIT, "--report_to", "none"))
    assert not (out / "runs").exists() and not list(out.rglob("trainer")) and not (out / "evaluation").exists()
    assert not (out / "categorize" / "folds").exists() and not (out / "router" / "features").exists()


def test_stage_run_names_are_suffixed(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path / "demo"), report_to="none")
    assert stage_run_name(args, stage_log_dir(tmp_path / "demo", "experts/synergy")) == "demo-experts-synergy"
    assert stage_run_name(args, stage_log_dir(tmp_path / "demo" / "seed-1", "router")) == "demo-seed-1-router"
    named = TrainingArguments(output_dir=str(tmp_path / "demo"), run_name="exp", report_to="none")
    assert stage_run_name(named, stage_log_dir(tmp_path / "demo", "baseline")) == "exp-baseline"


def test_quiet_run_prints_only_the_summary(tiny_bert_dir: Path, dataset: Path, tmp_path: Path) -> None:
    argv = _tiny_args(tiny_bert_dir, dataset, tmp_path / "out", *CROSS_FIT, "--log_level", "error",
                      "--disable_tqdm", "true", "--logging_steps", "1")
    done = subprocess.run([sys.executable, "-m", "mmoe.training.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    summary = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.stderr.strip() == "", done.stderr[-3000:]
    assert len(lines) == len(summary) <= 25, "\n".join(lines)
    assert not any("Stage " in line or "{'loss'" in line or "it/s]" in line for line in lines), "\n".join(lines)
