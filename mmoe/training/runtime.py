"""Devices, precision and processes: the one place where the pipeline moves tensors and where processes agree.

Everything heavy runs through the ``Trainer`` (training and ``Trainer.predict``), which takes the device, the
mixed precision and the process group from ``TrainingArguments`` / accelerate. What is left to the pipeline is
small and lives here:

* :func:`to_device` — the only hand-written tensor move (state copies kept on the CPU between epochs);
* :func:`check_on_device` — the guard run after every stage: every parameter on ``training_args.device``;
* :func:`is_main_process`, :func:`wait_for_everyone`, :func:`agree` — under ``accelerate launch`` or
  ``torchrun`` every process runs every stage (the Trainer needs them all), only the main process writes files,
  and the main process's view of the output folder decides for all;
* :func:`atomic_write_text`, :func:`atomic_save_tensors` — a temporary name, then a rename, so an interrupted
  write never leaves a file that looks finished.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from safetensors.torch import save_file

T = TypeVar("T")


def _state() -> PartialState:
    # PartialState is a process-wide singleton: TrainingArguments creates it (with the launcher's settings) the
    # first time `training_args.device` is read, and the pipeline reads that before anything else.
    return PartialState()


def to_device(value: T, device: torch.device | str) -> T:
    """``value`` (a module, moved in place; a tensor; or a dict/list/tuple of them) with every tensor on ``device``."""
    if isinstance(value, (torch.Tensor, torch.nn.Module)):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)({k: to_device(v, device) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def check_on_device(model: torch.nn.Module, device: torch.device | str, what: str) -> None:
    """Raise ``RuntimeError`` naming the first parameters of ``model`` that are not on ``device``.

    A stage that leaves part of a model behind (for example a router trained on the GPU inside a mixture still on
    the CPU) would otherwise fail later, deep inside torch, with "Expected all tensors to be on the same device".
    """
    device = torch.device(device)
    misplaced = [
        f"{name} ({param.device})" for name, param in model.named_parameters() if not _same_device(param.device, device)
    ]
    if misplaced:
        raise RuntimeError(
            f"{what}: {len(misplaced)} parameter(s) are not on {device}, e.g. {misplaced[:3]}. Every stage must leave "
            "its model on the device of its TrainingArguments."
        )


def _same_device(actual: torch.device, expected: torch.device) -> bool:
    if actual.type != expected.type:
        return False
    # "cuda" and "cuda:0" name the same device when the index is left open.
    return expected.index is None or actual.index is None or actual.index == expected.index


def is_main_process() -> bool:
    """True in a single-process run, and in the main process of a distributed one."""
    return _state().is_main_process


def wait_for_everyone() -> None:
    """A barrier across processes (a no-op in a single-process run)."""
    _state().wait_for_everyone()


def agree(value: T) -> T:
    """The main process's ``value``, in every process (for decisions such as "this stage is done")."""
    if _state().num_processes == 1:
        return value
    return broadcast_object_list([value], from_process=0)[0]


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block in the main process first, then in the others (e.g. writing a file the others read)."""
    with _state().main_process_first():
        yield


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False, encoding="utf-8") as handle:
        handle.write(text)
        tmp = Path(handle.name)
    os.replace(tmp, path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors.torch.save_file`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous() for k, v in to_device(tensors, "cpu").items()}, name)
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.remove(name)


def training_device(training_args: Any) -> torch.device:
    """The device the Trainer will use (reading it also sets up the process group under a launcher).

    Raises:
        ValueError: when a launcher started several processes (``WORLD_SIZE`` > 1) but the Trainer runs each
            as a process of its own: on a machine without GPUs this happens unless ``--use_cpu`` is given, and
            the processes would then train and write side by side.
    """
    device = training_args.device
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"The launcher started {launched} processes but TrainingArguments set up {training_args.world_size} "
            f"(device {device}). On a machine without GPUs pass --use_cpu so that the processes form one gloo "
            "process group."
        )
    return device
