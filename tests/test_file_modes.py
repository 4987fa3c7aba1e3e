"""Files honour the umask: atomic writes (a ``mkstemp`` file renamed into place) end up with the mode an ordinary
``open`` gives, ``0o666`` less the umask, not ``mkstemp``'s ``0o600``; reports are strict JSON."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmoe.training.runtime import (
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    strict_json_value,
)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for the test; the previous one is restored afterwards."""
    previous = os.umask(0o022)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "report.txt", "hello")
    atomic_save_tensors({"w": torch.ones(2, 2)}, tmp_path / "model.safetensors")
    atomic_write_json(tmp_path / "eval_results.json", {"accuracy": 0.5})
    for name in ("report.txt", "model.safetensors", "eval_results.json"):
        assert _mode(tmp_path / name) == expected, (name, oct(_mode(tmp_path / name)))
    # the same as a plain open() under that umask, and no temporary file is left behind
    (tmp_path / "plain.txt").write_text("x")
    assert _mode(tmp_path / "plain.txt") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_results.json", "model.safetensors", "plain.txt",
                                                          "report.txt"]
    assert (tmp_path / "report.txt").read_text() == "hello"
    torch.testing.assert_close(load_file(tmp_path / "model.safetensors")["w"], torch.ones(2, 2))


def test_reading_the_umask_leaves_it_unchanged(umask) -> None:
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027
    assert os.umask(0o022) == 0o027


def _refuse(token: str) -> None:
    raise ValueError(f"not strict JSON: {token}")


def test_strict_json_replaces_every_non_finite_number() -> None:
    report = {
        "loss": float("nan"),
        "nested": {"f1": [0.5, float("inf"), -float("inf")], "deeper": ({"x": np.float32("nan")},)},
        "numpy": [np.float64("inf"), np.float32(0.25), np.int64(3), np.array([1.0, np.nan])],
        "torch": torch.tensor(float("nan")),
        "kept": [True, None, "NaN", 7, 1.5],
    }
    cleaned = strict_json_value(report)
    assert cleaned == {
        "loss": None,
        "nested": {"f1": [0.5, None, None], "deeper": [{"x": None}]},
        "numpy": [None, 0.25, 3, [1.0, None]],
        "torch": None,
        "kept": [True, None, "NaN", 7, 1.5],
    }
    assert type(cleaned["numpy"][2]) is int and type(cleaned["numpy"][1]) is float
    assert math.isnan(report["loss"])  # pure: the input is not modified
    json.dumps(cleaned, allow_nan=False)


def test_atomic_write_json_writes_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "eval_results.json"
    atomic_write_json(path, {"mmoe": {"accuracy": 0.516, "cross_entropy": float("nan")}, "steps": [1, float("inf")]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=_refuse) == {"mmoe": {"accuracy": 0.516, "cross_entropy": None},
                                                        "steps": [1, None]}
    assert text == json.dumps(json.loads(text), indent=2)  # indent=2, as before
    atomic_write_json(path, {"when": path}, default=str)
    assert json.loads(path.read_text()) == {"when": str(path)}
