"""Modalities as token spans: the batches of I2MoE, whose experts are defined by masking one modality at a time.

In the image-captioned route every modality is text: the caption, the post, a dialogue context are columns that
the text template joins into one input (``"{caption} | {context} | {text}"``). :class:`ModalityCollator` encodes
that input as :class:`~mmoe.data.collators.MMoECollator` does and adds ``modality_ids`` ``[B, T]``: for each token
the index of the column (modality) it came from, ``-1`` for special tokens, template separators, columns that are
no modality, and padding. The tokenizer's character offsets (``return_offsets_mapping``, fast tokenizers) map each
token back to its column, so truncation and sub-word splits need no special care.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .collators import MMoECollator, _RowFields, encode_targets

NO_MODALITY = -1


def template_fields(template: str) -> list[str]:
    """The column names a text template uses, in order (``"{caption} | {text}"`` -> ``["caption", "text"]``)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def format_with_spans(
    row: dict[str, Any], template: str, modalities: Sequence[str]
) -> tuple[str, list[tuple[int, int, int]]]:
    """Fill ``template`` with a row's columns and return the text with the character spans of the modalities:
    ``(text, [(start, end, modality index), ...])``."""
    fields = _RowFields({k: ("" if v is None else v) for k, v in row.items()})
    pieces: list[str] = []
    spans: list[tuple[int, int, int]] = []
    length = 0
    for literal, name, spec, conversion in string.Formatter().parse(template):
        pieces.append(literal)
        length += len(literal)
        if name is None:
            continue
        value = fields[name]
        if conversion:
            value = {"r": repr, "s": str, "a": ascii}[conversion](value)
        value = format(value, spec or "")
        if name in modalities:
            spans.append((length, length + len(value), list(modalities).index(name)))
        pieces.append(value)
        length += len(value)
    return "".join(pieces), spans


def modality_ids_from_offsets(offsets: torch.Tensor, spans: list[list[tuple[int, int, int]]]) -> torch.Tensor:
    """``[B, T]`` modality index per token from the tokenizer's character offsets ``[B, T, 2]`` and each row's
    modality spans; a token belongs to the span it overlaps, special and padding tokens (empty offsets) to none."""
    ids = torch.full(offsets.shape[:2], NO_MODALITY, dtype=torch.long)
    starts, ends = offsets[..., 0], offsets[..., 1]
    real = ends > starts
    for row, row_spans in enumerate(spans):
        for start, end, index in row_spans:
            inside = real[row] & (starts[row] < end) & (ends[row] > start)
            ids[row][inside] = index
    return ids


@dataclass
class ModalityCollator(MMoECollator):
    """:class:`~mmoe.data.collators.MMoECollator` plus ``modality_ids`` ``[B, T]`` for I2MoE.

    Args:
        modalities: the template columns that are modalities, in the model's order (``config.modalities``). Other
            template columns (and the template's own text) get ``-1``.
        tokenizer, text_template, max_length, label_column, interaction_column, experts: as for
            :class:`~mmoe.data.collators.MMoECollator`.

    Raises:
        ValueError: a modality that is not a column of the template, a tokenizer without character offsets, or a
            row where a modality has no token (an empty column, or one truncated away by ``max_length``).
    """

    modalities: Sequence[str] = field(default_factory=lambda: ["caption", "text"])

    def __post_init__(self) -> None:
        missing = [name for name in self.modalities if name not in template_fields(self.text_template)]
        if missing:
            raise ValueError(
                f"Modalities {missing} are not columns of the text template {self.text_template!r} (columns: "
                f"{template_fields(self.text_template)}). Each I2MoE modality is a template column."
            )

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded, texts = self._encode(rows)
        for name, empty in self._rows_without(encoded["modality_ids"]).items():
            raise ValueError(
                f"Modality {name!r} has no token in {len(empty)} row(s) of this batch (e.g. row {empty[0]}: "
                f"{texts[empty[0]][:80]!r}): its column is empty or was truncated away at max_length="
                f"{self.max_length}. I2MoE masks each modality, so every row needs every one: fill or drop those "
                "rows, or raise --max_length."
            )
        encoded.update(encode_targets(rows, self.label_column, self.interaction_column, self.experts))
        return encoded

    def _encode(self, rows: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[str]]:
        if not getattr(self.tokenizer, "is_fast", True):
            raise ValueError("ModalityCollator needs a fast tokenizer (character offsets); load it with use_fast=True.")
        texts, spans = zip(*(format_with_spans(row, self.text_template, self.modalities) for row in rows))
        encoded = dict(self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
            return_offsets_mapping=True,
        ))
        encoded["modality_ids"] = modality_ids_from_offsets(encoded.pop("offset_mapping"), list(spans))
        return encoded, list(texts)

    def _rows_without(self, modality_ids: torch.Tensor) -> dict[str, list[int]]:
        """``{modality: [rows]}`` of the rows in which a modality has no token (only modalities with such rows)."""
        missing = {}
        for index, name in enumerate(self.modalities):
            empty = (~(modality_ids == index).any(dim=1)).nonzero().flatten().tolist()
            if empty:
                missing[name] = empty
        return missing

    def check_rows(self, rows: Sequence[dict[str, Any]], split: str = "data", batch_size: int = 512) -> None:
        """Encode every row (no model needed) and raise one ``ValueError`` naming, per modality, how many rows of
        ``split`` have no token of it, with their indices: the check to run before any training starts."""
        problems = []
        missing: dict[str, list[int]] = {}
        for start in range(0, len(rows), batch_size):
            chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
            encoded, _ = self._encode(chunk)
            for name, empty in self._rows_without(encoded["modality_ids"]).items():
                missing.setdefault(name, []).extend(start + i for i in empty)
        for name, empty in missing.items():
            problems.append(
                f"modality {name!r} has no token in {len(empty)} row(s) of the {split} split (rows {empty[:8]}"
                f"{' ...' if len(empty) > 8 else ''}): the column is empty or truncated away at max_length="
                f"{self.max_length}"
            )
        if problems:
            raise ValueError(
                "I2MoE masks one modality at a time, so every row needs every modality: " + "; ".join(problems)
                + ". Fill or drop those rows, or raise --max_length."
            )
