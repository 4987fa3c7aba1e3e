"""Stop a training stage as soon as it turns non-finite, instead of saving a NaN model as a success.

Two guards:

* :class:`NonFiniteLossCallback`, a ``TrainerCallback``: every logged loss (``loss``, ``eval_loss``, any key ending
  in ``loss``) and ``grad_norm`` must be finite, and so must the model's trainable parameters whenever the Trainer
  is about to log, evaluate or save and at the end of every epoch. The parameter check matters because the
  Trainer's ``logging_nan_inf_filter`` (on by default) replaces a NaN loss by the running mean in the logged
  ``loss``: a diverged run can log finite losses while its weights are already NaN. Raising from the callback
  stops ``Trainer.train`` before the next checkpoint is written.
* :func:`assert_finite_state`: the same check on a state dict, run before a stage's weights are saved.

Both raise :class:`NonFiniteTrainingError`, whose message names the stage, what was non-finite and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

__all__ = ["FIX_HINT", "NonFiniteLossCallback", "NonFiniteTrainingError", "assert_finite_state", "non_finite_names"]

FIX_HINT = (
    "Lower the learning rate (--learning_rate, and the stage's own rate such as --router_learning_rate), train in "
    "fp32 or with --bf16 instead of --fp16, and check the data for empty, extreme or non-finite inputs."
)
"""What to try when training diverges; part of every :class:`NonFiniteTrainingError` message."""

_MAX_NAMED = 5  # tensors named in a message; the count covers the rest


class NonFiniteTrainingError(RuntimeError):
    """A loss, gradient norm or weight of a training stage became NaN or infinite; nothing non-finite is saved."""


def _is_non_finite_number(value: Any) -> bool:
    """Whether ``value`` is a number (Python, numpy or a one-element tensor) that is NaN or infinite."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not bool(torch.isfinite(value).all())
    if isinstance(value, bool):
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _watched(key: str) -> bool:
    return key.endswith("loss") or key == "grad_norm"


def non_finite_names(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` (``(name, tensor)`` pairs) holding a NaN or an inf."""
    items = [(name, tensor) for name, tensor in tensors if torch.is_floating_point(tensor) and tensor.numel()]
    if not items:
        return []
    # One device sync for the common, all-finite case; the names are only looked up on failure.
    flags = torch.stack([torch.isfinite(tensor.detach()).all().to("cpu") for _, tensor in items])
    if bool(flags.all()):
        return []
    return [name for (name, _), finite in zip(items, flags.tolist()) if not finite]


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")


def assert_finite_state(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`NonFiniteTrainingError` naming the tensors of ``tensors`` that hold a NaN or an infinity.

    Call it before saving a stage's weights, so that a diverged stage is never written as a result.

    Args:
        tensors: a state dict (non-floating tensors are skipped).
        what: what the tensors are, for the message (e.g. ``"baseline stage weights"``).
    """
    bad = non_finite_names(tensors.items())
    if bad:
        raise NonFiniteTrainingError(
            f"{what}: {len(bad)} of {len(tensors)} tensor(s) hold NaN or inf values ({_name_list(bad)}); they are "
            f"not saved. {FIX_HINT}"
        )


class NonFiniteLossCallback(TrainerCallback):
    """Raise :class:`NonFiniteTrainingError` when a training stage turns non-finite.

    Checked: every logged value whose key ends in ``loss`` (``loss``, ``eval_loss``, ``train_loss``, ...) or is
    ``grad_norm`` (:meth:`on_log`); the trainable parameters of the model at every step where the Trainer is about
    to log, evaluate or save (:meth:`on_step_end`) and at the end of every epoch (:meth:`on_epoch_end`).

    Under ``--fp16`` the gradient scaler produces non-finite gradient norms on purpose (it then skips the step and
    lowers the scale), so ``grad_norm`` is not checked there; the losses and the weights still are.

    Args:
        stage: the stage's name, shown in the message (e.g. ``"baseline"``, ``"expert 'synergy'"``).
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def _fail(self, what: str, state: TrainerState) -> NoReturn:
        epoch = f"{state.epoch:.2f}" if state.epoch is not None else "?"
        raise NonFiniteTrainingError(
            f"{self.stage}: {what} at step {state.global_step} (epoch {epoch}); training stopped, nothing of this "
            f"stage was saved after this point. {FIX_HINT}"
        )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for key, value in (logs or {}).items():
            if not _watched(key) or (key == "grad_norm" and args.fp16):
                continue
            if _is_non_finite_number(value):
                self._fail(f"{key} is {float(value)}", state)

    def _check_parameters(self, state: TrainerState, model: torch.nn.Module | None, when: str) -> None:
        if model is None:
            return
        bad = non_finite_names((name, p) for name, p in model.named_parameters() if p.requires_grad)
        if bad:
            self._fail(f"{len(bad)} trainable parameter(s) hold NaN or inf values {when} ({_name_list(bad)})", state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The flow callback has already decided whether this step logs, evaluates or saves: check the weights
        # then, so a NaN model is never checkpointed and a filtered NaN loss is still caught by the next log.
        if control.should_log or control.should_evaluate or control.should_save:
            self._check_parameters(state, kwargs.get("model"), "after the optimizer step")

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._check_parameters(state, kwargs.get("model"), "at the end of the epoch")
