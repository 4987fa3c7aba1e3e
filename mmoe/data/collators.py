"""Turn raw dataset rows into model batches.

Rows stay raw in the ``datasets.Dataset`` (text fields, label, interaction) and are encoded batch by batch
here, so the same dataset serves every backbone and every stage (baseline, experts, router, evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration_mmoe import DEFAULT_EXPERTS


class _RowFields(dict):
    """``str.format_map`` helper that names the missing column instead of raising a bare ``KeyError``."""

    def __missing__(self, key: str) -> str:
        raise KeyError(
            f"text_template uses the column {{{key}}}, which the dataset does not have; "
            f"available columns: {sorted(self)}."
        )


DEFAULT_TEMPLATES = {
    "mustard": "{caption} | {context} | {text}",
    "synthetic": "{caption} | {text}",
}
"""The text template of each built-in dataset (the image-captioned route: the caption is text)."""


def resolve_text_template(dataset: str, template: str | None = None) -> str:
    """``template`` when given, else the built-in dataset's default, else ``"{text}"``."""
    return template or DEFAULT_TEMPLATES.get(dataset, "{text}")


def format_text(row: dict[str, Any], template: str) -> str:
    """Fill ``template`` (e.g. ``"{caption} {text}"``) with a row's columns; ``None`` becomes ``""``."""
    return template.format_map(_RowFields({k: ("" if v is None else v) for k, v in row.items()}))


@dataclass
class MMoECollator:
    """Encode raw rows into ``input_ids``/``attention_mask`` (plus ``labels`` and ``interaction_labels``).

    Args:
        tokenizer: a tokenizer (or a processor whose ``__call__`` takes ``text=``).
        text_template: how the text columns become one input string, e.g. ``"{caption} | {context} | {text}"``.
        max_length: truncation length in tokens.
        label_column: column of class indices, emitted as ``labels`` ``[B]`` (``None`` to skip).
        interaction_column: column of interaction names, emitted as ``interaction_labels`` ``[B]`` (indices
            into ``experts``); a name that is not an expert raises ``ValueError``.
        experts: expert names, in the model's order.
    """

    tokenizer: Any
    text_template: str = "{text}"
    max_length: int = 512
    label_column: str | None = "label"
    interaction_column: str | None = None
    experts: Sequence[str] = field(default_factory=lambda: list(DEFAULT_EXPERTS))

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [format_text(row, self.text_template) for row in rows]
        batch = dict(
            self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )
        batch.update(encode_targets(rows, self.label_column, self.interaction_column, self.experts))
        return batch


def encode_targets(
    rows: list[dict[str, Any]],
    label_column: str | None,
    interaction_column: str | None,
    experts: Sequence[str],
) -> dict[str, torch.Tensor]:
    """``labels`` ``[B]`` (when ``label_column`` is in the rows) and ``interaction_labels`` ``[B]`` (expert
    indices, when ``interaction_column`` is set) of a batch of raw rows.

    Raises:
        ValueError: an interaction name that is not one of ``experts``.
    """
    targets: dict[str, torch.Tensor] = {}
    if label_column is not None and label_column in rows[0]:
        targets["labels"] = torch.tensor([int(row[label_column]) for row in rows], dtype=torch.long)
    if interaction_column is not None:
        targets["interaction_labels"] = torch.tensor(
            [_expert_index(row[interaction_column], experts) for row in rows], dtype=torch.long
        )
    return targets


def _expert_index(interaction: str, experts: Sequence[str]) -> int:
    try:
        return list(experts).index(interaction)
    except ValueError:
        raise ValueError(f"Interaction {interaction!r} is not one of the model's experts {list(experts)}.") from None
