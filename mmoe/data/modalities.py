"""Modalities as token spans: the batches of I2MoE, whose experts are defined by masking one modality at a time.

In the image-captioned route every modality is text: the caption, the post, a dialogue context are columns that
the text template joins into one input (``"{caption} | {context} | {text}"``). :class:`ModalityCollator` encodes
that input as :class:`~mmoe.data.collators.MMoECollator` does and adds ``modality_ids`` ``[B, T]``: for each token
the index of the column (modality) it came from, ``-1`` for special tokens, template separators, columns that are
no modality, and padding. The tokenizer's character offsets (``return_offsets_mapping``, fast tokenizers) map each
token back to its column, so truncation and sub-word splits need no special care.
:class:`MultimodalModalityCollator` does the same on vision-language backbones, where ``"image"`` is a modality too
(ViLT; LLaVA and BLIP-2, whose expanded image tokens are aligned with the unexpanded prompt's offsets).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration_mmoe import IMAGE_MODALITY
from .collators import MMoECollator, _RowFields, encode_targets
from .multimodal_collator import MultimodalCollator

NO_MODALITY = -1


def template_fields(template: str) -> list[str]:
    """The column names a text template uses, in order (``"{caption} | {text}"`` -> ``["caption", "text"]``)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


CAPTION_MODALITY = "caption"
"""In the image-captioned route the caption column stands in for the image."""


def resolve_modalities(
    method: str, template: str, image_column: str | None = None, modalities: Sequence[str] | None = None
) -> list[str]:
    """The run's modalities: ``modalities`` when given, else the method's default.

    * I2MoE: the image (with an image column), then every template column (:func:`default_modalities`).
    * MMoE compares two unimodal predictions: the image (or, in the captioned route, ``caption``) and ``text`` when
      the template has them, else the template's two columns. Anything else needs ``--modalities``.
    """
    if modalities:
        return list(modalities)
    if method == "i2moe":
        return default_modalities(template, image_column)
    columns = template_fields(template)
    vision = IMAGE_MODALITY if image_column else (CAPTION_MODALITY if CAPTION_MODALITY in columns else None)
    if vision is not None and "text" in columns:
        return [vision, "text"]
    if image_column and len(columns) == 1:
        return [IMAGE_MODALITY, columns[0]]
    if not image_column and len(columns) == 2:
        return columns
    raise ValueError(
        f"--modalities: MMoE categorizes rows with one unimodal predictor per modality and needs two; the text "
        f"template {template!r} (columns {columns}) does not say which. Name two with --modalities (template columns, "
        "or 'image' with --image_column)."
    )


def unimodal_views(modalities: Sequence[str]) -> dict[str, str]:
    """MMoE's two unimodal predictors, named by the prediction columns they fill (``text_prediction``,
    ``vision_prediction``): ``{"text": <modality>, "vision": <modality>}``. The vision side is the image or the
    caption when one of them is a modality, else the second modality."""
    names = list(modalities)
    if len(names) != 2:
        raise ValueError(f"MMoE needs exactly two modalities for its unimodal predictors, got {names}.")
    vision = next((name for name in names if name in (IMAGE_MODALITY, CAPTION_MODALITY)), names[1])
    text = next(name for name in names if name != vision)
    return {"text": text, "vision": vision}


def default_modalities(template: str, image_column: str | None = None) -> list[str]:
    """I2MoE's modalities when none are named: the image (with an image column), then every template column."""
    return ([IMAGE_MODALITY] if image_column else []) + template_fields(template)


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


class _ModalitySpans:
    """Text positions of the modalities, shared by the text and the vision-language collators.

    Subclasses have ``modalities``, ``text_template``, ``max_length`` and a fast tokenizer (``_span_tokenizer``).
    """

    modalities: Sequence[str]
    text_template: str
    max_length: int | None

    @property
    def _span_tokenizer(self) -> Any:
        raise NotImplementedError

    @property
    def _text_modalities(self) -> list[str]:
        return [name for name in self.modalities if name != IMAGE_MODALITY]

    def _check_template(self) -> None:
        missing = [name for name in self._text_modalities if name not in template_fields(self.text_template)]
        if missing:
            raise ValueError(
                f"Modalities {missing} are not columns of the text template {self.text_template!r} (columns: "
                f"{template_fields(self.text_template)}). Each I2MoE text modality is a template column"
                f"{'' if IMAGE_MODALITY in self.modalities else f'; {IMAGE_MODALITY!r} is the image of a VLM'}."
            )

    def _encode(self, rows: Sequence[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The tokenizer's encoding of the rows' texts (``input_ids``, ``attention_mask``, ...) with
        ``modality_ids`` ``[B, T]``, and the texts."""
        tokenizer = self._span_tokenizer
        if not getattr(tokenizer, "is_fast", True):
            raise ValueError("I2MoE's collators need a fast tokenizer (character offsets); load it with use_fast=True.")
        texts, spans = zip(*(format_with_spans(row, self.text_template, self.modalities) for row in rows))
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt", "return_offsets_mapping": True}
        if self.max_length is not None:
            kwargs.update(truncation=True, max_length=self.max_length)
        encoded = dict(tokenizer(list(texts), **kwargs))
        encoded["modality_ids"] = modality_ids_from_offsets(encoded.pop("offset_mapping"), list(spans))
        return encoded, list(texts)

    def _rows_without(self, modality_ids: torch.Tensor) -> dict[str, list[int]]:
        """``{modality: [rows]}`` of the rows in which a text modality has no token (only those with such rows)."""
        missing = {}
        for index, name in enumerate(self.modalities):
            if name == IMAGE_MODALITY:
                continue
            empty = (~(modality_ids == index).any(dim=1)).nonzero().flatten().tolist()
            if empty:
                missing[name] = empty
        return missing

    def _refuse_missing(self, modality_ids: torch.Tensor, texts: list[str]) -> None:
        for name, empty in self._rows_without(modality_ids).items():
            raise ValueError(
                f"Modality {name!r} has no token in {len(empty)} row(s) of this batch (e.g. row {empty[0]}: "
                f"{texts[empty[0]][:80]!r}): its column is empty or was truncated away at max_length="
                f"{self.max_length}. I2MoE masks each modality, so every row needs every one: fill or drop those "
                "rows, or raise --max_length."
            )

    def check_rows(self, rows: Sequence[dict[str, Any]], split: str = "data", batch_size: int = 512) -> None:
        """Encode the text of every row (no model, no images needed) and raise one ``ValueError`` naming, per
        modality, how many rows of ``split`` have no token of it, with their indices: the check to run before any
        training starts."""
        missing: dict[str, list[int]] = {}
        for start in range(0, len(rows), batch_size):
            chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
            encoded, _ = self._encode(chunk)
            for name, empty in self._rows_without(encoded["modality_ids"]).items():
                missing.setdefault(name, []).extend(start + i for i in empty)
        problems = [
            f"modality {name!r} has no token in {len(empty)} row(s) of the {split} split (rows {empty[:8]}"
            f"{' ...' if len(empty) > 8 else ''}): the column is empty or truncated away at max_length="
            f"{self.max_length}"
            for name, empty in missing.items()
        ]
        if problems:
            raise ValueError(
                "I2MoE masks one modality at a time, so every row needs every modality: " + "; ".join(problems)
                + ". Fill or drop those rows, or raise --max_length."
            )


@dataclass
class ModalityCollator(_ModalitySpans, MMoECollator):
    """:class:`~mmoe.data.collators.MMoECollator` plus ``modality_ids`` ``[B, T]`` for I2MoE (text backbones: the
    image-captioned route).

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
        if IMAGE_MODALITY in self.modalities:
            raise ValueError(
                f"Modality {IMAGE_MODALITY!r} is the image of a vision-language backbone; this collator serves text "
                "backbones (the caption is a text modality). Use MultimodalModalityCollator for ViLT."
            )
        self._check_template()

    @property
    def _span_tokenizer(self) -> Any:
        return self.tokenizer

    def _encode(self, rows: Sequence[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[str]]:
        if self.max_length is not None:  # one batched length check; only the rows that overflow are cut
            texts = [format_with_spans(row, self.text_template, self.modalities)[0] for row in rows]
            lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
            rows = [self._fit_fields(row) if n > self.max_length else row for row, n in zip(rows, lengths)]
        return super()._encode(rows)

    def _fit_fields(self, row: dict[str, Any], rounds: int = 4) -> dict[str, Any]:
        """``row`` with its modality columns cut, longest first, until the filled template fits ``max_length``.

        Cutting the filled template at its end (what :class:`MMoECollator` does) drops the last columns whole when
        an early one is long (MUStARD's captions and contexts), and I2MoE needs every modality in every row. So the
        longest modality loses one token at a time (``truncation="longest_first"``, for any number of columns),
        each column cut at a token boundary of its own encoding. Columns are tokenized apart, which may differ
        from the joint encoding by a token at their joins; a few ``rounds`` absorb that.
        """
        if self.max_length is None:
            return row
        names = [name for name in self._text_modalities if row.get(name)]
        for _ in range(rounds):
            text, _ = format_with_spans(row, self.text_template, self.modalities)
            excess = len(self.tokenizer(text)["input_ids"]) - self.max_length
            if excess <= 0 or not names:
                return row
            values = {name: str(row[name]) for name in names}
            offsets = {
                name: self.tokenizer(values[name], add_special_tokens=False, return_offsets_mapping=True)[
                    "offset_mapping"
                ]
                for name in names
            }
            kept = {name: len(offsets[name]) for name in names}
            while excess > 0:
                longest = max(names, key=lambda name: kept[name])
                if kept[longest] <= 1:
                    break  # every modality is down to one token: the end cut takes the rest
                kept[longest] -= 1
                excess -= 1
            row = dict(row)
            for name in names:
                if kept[name] < len(offsets[name]):
                    row[name] = values[name][: offsets[name][kept[name] - 1][1]]
        return row

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded, texts = self._encode(rows)
        self._refuse_missing(encoded["modality_ids"], texts)
        encoded.update(encode_targets(rows, self.label_column, self.interaction_column, self.experts))
        return encoded


@dataclass
class MultimodalModalityCollator(_ModalitySpans, MultimodalCollator):
    """:class:`~mmoe.data.multimodal_collator.MultimodalCollator` plus ``modality_ids`` for I2MoE on a
    vision-language backbone: the image is the modality ``"image"``, the text modalities are template columns
    marked in the text positions.

    * **Fusion VLM** (ViLT): the processor's text positions are the tokenizer's; image patches come after the text
      inside the backbone, so the model counts them as the image (:meth:`I2MoEForSequenceClassification
      .modality_features`).
    * **Multimodal LLM** (LLaVA, BLIP-2): the processor expands the image placeholder into one token per image
      feature (LLaVA: inside the prompt; BLIP-2: its query tokens before the text). The unexpanded prompt is encoded
      with character offsets, and its tokens are aligned with the processor's ``input_ids`` with the image tokens
      left out of both (the rest must agree token for token, or the batch is refused). The expanded image-token
      positions get the index of ``"image"`` (``-1`` when the image is not a modality): the reweighting model pools
      the image's hidden states there, and masking a text modality leaves them alone. The image itself is masked at
      ``pixel_values``: the backbone overwrites the placeholder embeddings with the vision features computed from
      the pixels (and finds them by comparing with the placeholder's embedding), so noise in the placeholder
      embeddings would never reach the language model; noise pixels give noise image features, I2MoE's random
      input of a masked modality.
    """

    modalities: Sequence[str] = field(default_factory=lambda: [IMAGE_MODALITY, "text"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.view == "image":
            raise ValueError("I2MoE masks each modality in the full input; MultimodalModalityCollator takes "
                             "view='both' or 'text', not 'image' (its text is empty).")
        self._check_template()

    @property
    def _span_tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def _expands_image_tokens(self) -> bool:
        """Whether the processor's text positions differ from the tokenizer's (image placeholders or a prompt)."""
        return self._image_token is not None or self.prompt_template != "{text}"

    def _encode(self, rows: Sequence[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The unexpanded prompts of :meth:`MultimodalCollator._prompt`, encoded with ``modality_ids``."""
        if not self._expands_image_tokens:
            return super()._encode(rows)
        tokenizer = self._tokenizer
        if not getattr(tokenizer, "is_fast", True):
            raise ValueError("I2MoE's collators need a fast tokenizer (character offsets); load it with use_fast=True.")
        prompts, spans = [], []
        for row in rows:
            text, text_spans = format_with_spans(row, self.text_template, self.modalities)
            if self.max_length is not None:  # as MultimodalCollator._prompt: the text alone is cut
                text = self._truncate(text, self.max_length)
            prompt, (where,) = format_with_spans(
                {"text": text, "image_token": self._image_token or ""}, self.prompt_template, ["text"]
            )
            shift = where[0]  # spans are clipped to the (truncated) text: the prompt may go on after it
            spans.append([(shift + start, shift + min(end, len(text)), index)
                          for start, end, index in text_spans if start < len(text)])
            prompts.append(prompt)
        encoded = dict(tokenizer(prompts, padding=True, return_tensors="pt", return_offsets_mapping=True))
        encoded["modality_ids"] = modality_ids_from_offsets(encoded.pop("offset_mapping"), spans)
        return encoded, prompts

    def _aligned_modality_ids(self, batch: dict[str, torch.Tensor], encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """``modality_ids`` on the processor's positions: each row's non-image tokens are the unexpanded prompt's
        (in order), its image tokens the image."""
        image_id = self._tokenizer.convert_tokens_to_ids(self._image_token) if self._image_token else None
        image_index = list(self.modalities).index(IMAGE_MODALITY) if IMAGE_MODALITY in self.modalities else NO_MODALITY
        input_ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(input_ids)).bool()
        ids = torch.full(input_ids.shape, NO_MODALITY, dtype=torch.long)
        for row in range(input_ids.shape[0]):
            is_image = mask[row] & (input_ids[row] == image_id) if image_id is not None else torch.zeros_like(mask[row])
            text = (mask[row] & ~is_image).nonzero().flatten()
            own = encoded["input_ids"][row]
            kept = (encoded["attention_mask"][row].bool() & (own != image_id)).nonzero().flatten()
            if not torch.equal(input_ids[row, text], own[kept]):
                raise ValueError(
                    f"{type(self.processor).__name__} encodes the text of row {row} differently from its tokenizer "
                    "(beyond expanding the image placeholder), so I2MoE's modality positions cannot be marked; use "
                    "the image-captioned route with a text backbone for I2MoE."
                )
            ids[row, text] = encoded["modality_ids"][row, kept]
            ids[row, is_image] = image_index
        return ids

    def check_rows(self, rows: Sequence[dict[str, Any]], split: str = "data", batch_size: int = 512) -> None:
        """:meth:`_ModalitySpans.check_rows`; for a processor that expands image tokens also one row through the
        processor (with a blank image), so a processor whose text positions cannot be aligned fails before
        training."""
        super().check_rows(rows, split, batch_size)
        if self._expands_image_tokens and len(rows):
            self.with_view("text")([dict(rows[0])])

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(rows)
        encoded, texts = self._encode(rows)
        if self._expands_image_tokens:
            modality_ids = self._aligned_modality_ids(batch, encoded)
        elif torch.equal(encoded["input_ids"], batch["input_ids"]):
            modality_ids = encoded["modality_ids"]
        else:
            raise ValueError(
                f"{type(self.processor).__name__} encodes the text differently from its tokenizer, so the modality "
                "positions cannot be marked; use the image-captioned route for I2MoE."
            )
        self._refuse_missing(modality_ids, texts)
        batch["modality_ids"] = modality_ids
        return batch
