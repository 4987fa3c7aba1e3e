"""Devices, precision and processes: the one place where the pipeline moves tensors and where processes agree.

Everything heavy runs through the ``Trainer`` (training and ``Trainer.predict``), which takes the device, the
mixed precision and the process group from ``TrainingArguments`` / accelerate. What is left to the pipeline is
small and lives here:

* :func:`to_device` — the only hand-written tensor move (state copies kept on the CPU between epochs);
* :func:`check_on_device` — the guard run after every stage: every parameter on ``training_args.device``;
* :func:`is_main_process`, :func:`wait_for_everyone`, :func:`agree` — under ``accelerate launch`` or
  ``torchrun`` every process runs every stage (the Trainer needs them all), only the main process writes files,
  and the main process's view of the output folder decides for all;
* :func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_save_tensors` — a temporary name, then a
  rename, so an interrupted write never leaves a file that looks finished; the file gets the mode of an ordinary
  ``open`` (``0o666`` less the umask), not ``mkstemp``'s ``0o600``. Reports are strict JSON
  (:func:`strict_json_value`: a non-finite number is written as ``null``, never as ``NaN``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
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


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's ``/proc/self/status``);
    elsewhere set and restored at once under a lock (``os.umask`` has no read-only form)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def _public_mode(path: str | os.PathLike) -> None:
    """Give ``path`` (a temporary file from ``mkstemp``, mode ``0o600``) the mode ``open`` would have given it:
    ``0o666`` less the umask, so that finished files are readable by whom the user's umask allows."""
    os.chmod(path, 0o666 & ~current_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename (mode: ``0o666`` less
    the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False, encoding="utf-8") as handle:
        tmp = Path(handle.name)
        try:
            handle.write(text)
        except BaseException:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise
    try:
        _public_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def strict_json_value(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` with every non-finite float (``NaN``, ``±inf``, numpy and torch scalars too) replaced by ``None``,
    anywhere in nested dicts, lists and tuples, so that ``json.dumps(..., allow_nan=False)`` succeeds and the
    result is JSON that every parser accepts (Python writes ``NaN`` by default, which ``JSON.parse`` rejects).

    numpy and torch scalars and arrays become Python numbers and lists; tuples become lists. Any other object is
    passed to ``default`` when given (its result is cleaned the same way), else kept as is. Pure: ``obj`` is not
    modified.
    """
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, float):  # np.float64 is a float too
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return strict_json_value(obj.tolist(), default)
    if isinstance(obj, torch.Tensor):
        return strict_json_value(obj.detach().cpu().tolist(), default)
    if isinstance(obj, Mapping):
        return {key: strict_json_value(value, default) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json_value(value, default) for value in obj]
    if default is not None:
        return strict_json_value(default(obj))
    return obj


def atomic_write_json(path: Path, obj: Any, *, default: Callable[[Any], Any] | None = None) -> None:
    """Write ``obj`` to ``path`` as strict JSON (``indent=2``), atomically (:func:`atomic_write_text`).

    Non-finite numbers become ``null`` (:func:`strict_json_value`); ``default`` converts other objects, as in
    ``json.dumps``. ``allow_nan=False`` makes sure no ``NaN`` or ``Infinity`` token is ever written.
    """
    atomic_write_text(path, json.dumps(strict_json_value(obj, default), indent=2, allow_nan=False))


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors.torch.save_file`` through a temporary file in the same folder and a rename (mode: ``0o666``
    less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous() for k, v in to_device(tensors, "cpu").items()}, name)
        _public_mode(name)
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
