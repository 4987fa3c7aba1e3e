"""Batches of image + text rows for vision-language backbones, and the factory that picks a collator.

Three backbone families reach :class:`~mmoe.MMoEForSequenceClassification` (see the README):

* **image-captioned LLM** (text backbone: BERT, Qwen2, Llama, ...): the caption is text, so
  :class:`~mmoe.data.collators.MMoECollator` with ``text_template="{caption} {text}"`` does the job;
* **fusion VLM** (ViLT): text tokens and image patches go through one transformer; the processor emits
  ``input_ids``, ``token_type_ids``, ``attention_mask``, ``pixel_values`` and ``pixel_mask``;
* **multimodal LLM** (LLaVA, BLIP-2): the prompt holds image placeholder tokens that the processor expands to
  one token per image feature, so ``attention_mask`` covers the image tokens too and ``pooling="last"`` finds
  the last real token. LLaVA's placeholder is put into the prompt here (``prompt_template``); BLIP-2's
  processor prepends its query tokens itself.

:func:`build_collator` picks the right collator for a backbone config and refuses mismatches (images for a
text backbone, no images for a VLM). :func:`load_processor` loads what a backbone folder needs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backbone_utils import is_vision_language
from ..configuration_mmoe import DEFAULT_EXPERTS
from .collators import MMoECollator, encode_targets, format_text
from .images import ROW_INDEX_COLUMN, blank_image, load_image

logger = logging.getLogger(__name__)

VIEWS: tuple[str, ...] = ("both", "text", "image")
"""``"both"``: image + text; ``"text"``: text with a blank image; ``"image"``: image with empty text."""

# Processors that insert their image placeholder tokens themselves (BLIP-2 prepends its query tokens).
_PROCESSORS_PLACING_IMAGE_TOKENS = ("Blip2Processor", "InstructBlipProcessor")
_DEFAULT_BLANK_SIDE = 224


def _token_text(token: Any) -> str | None:
    """The string of an image token (processors keep ``str`` or ``AddedToken``)."""
    if token is None:
        return None
    return getattr(token, "content", None) or str(token)


def _size_field(size: Any, key: str) -> Any:
    """A field of an image processor's size: a dict (older processors) or a ``SizeDict`` (transformers 5)."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)


@dataclass
class MultimodalCollator:
    """Encode raw image + text rows into a vision-language batch.

    Args:
        processor: a multimodal processor (``ViltProcessor``, ``LlavaProcessor``, ``Blip2Processor``, ... as
            ``AutoProcessor.from_pretrained`` returns it), or a tokenizer together with ``image_processor``.
        text_template: how text columns become one string, e.g. ``"{context} {text}"``.
        image_column: column of images: PIL images, paths, bytes, or ``{"bytes", "path"}`` dicts (see
            :func:`~mmoe.data.images.load_image`). Not read by ``view="text"`` (may be ``None`` there).
        max_length: token budget of the text. Processors without image placeholders (ViLT) truncate the whole
            sequence to it; for LLaVA/BLIP-2 the text itself is cut to ``max_length`` tokens before the prompt
            is built, so image placeholder tokens are never truncated (they come on top). ``None``: no limit.
        label_column: column of class indices, emitted as ``labels`` ``[B]`` (``None`` to skip).
        interaction_column: column of interaction names, emitted as ``interaction_labels`` ``[B]``.
        experts: expert names, in the model's order.
        view: ``"both"`` (default), ``"text"`` (the text with a blank image: a constant image of the image
            processor's input size whose colour is the processor's normalisation mean, so ``pixel_values`` are
            ~0 everywhere) or ``"image"`` (the image with an empty text). The two unimodal views feed trained
            or prompted unimodal predictors with the same multimodal backbone.
        image_processor: the image processor when ``processor`` is a bare tokenizer.
        prompt_template: how the text and the image placeholder form the prompt; fields ``{text}`` and
            ``{image_token}``. Default: ``"{image_token}\\n{text}"`` for processors with an image token that
            they do not place themselves (LLaVA; e.g. ``"USER: {image_token}\\n{text} ASSISTANT:"`` for
            llava-1.5 checkpoints), ``"{text}"`` otherwise (ViLT, BLIP-2).
        blank_image_size: ``(width, height)`` of the blank image of ``view="text"`` (default: the image
            processor's crop size or size, else 224 x 224).
        blank_image_color: RGB colour of the blank image (default: the image processor's ``image_mean``).
        image_root: folder against which relative image paths are resolved.
        id_column: a column that identifies rows in error messages (besides ``row_index``, added by
            :func:`~mmoe.data.images.prepare_image_dataset`).

    Returns (``__call__``): ``input_ids``, ``attention_mask``, ``pixel_values`` ``[B, 3, H, W]`` and what else
    the processor emits (``token_type_ids``, ``pixel_mask``, ``image_sizes``), plus ``labels`` and
    ``interaction_labels``.

    Raises:
        ValueError: a row whose image cannot be loaded (naming the row and the path), a missing column, a
            processor without an image processor, an unknown ``view``.
    """

    processor: Any
    text_template: str = "{text}"
    image_column: str | None = "image"
    max_length: int | None = 512
    label_column: str | None = "label"
    interaction_column: str | None = None
    experts: Sequence[str] = field(default_factory=lambda: list(DEFAULT_EXPERTS))
    view: str = "both"
    image_processor: Any = None
    prompt_template: str | None = None
    blank_image_size: tuple[int, int] | None = None
    blank_image_color: tuple[int, int, int] | None = None
    image_root: str | Path | None = None
    id_column: str | None = "id"

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"MultimodalCollator: unknown view {self.view!r}; use one of {list(VIEWS)}.")
        self._combined = self.image_processor is None
        self._image_proc = self.image_processor or getattr(self.processor, "image_processor", None)
        if self._image_proc is None:
            raise ValueError(
                f"MultimodalCollator needs an image processor, but {type(self.processor).__name__} has none. Load "
                "the backbone's processor with AutoProcessor.from_pretrained(path) (or mmoe.data.multimodal_collator"
                ".load_processor), or pass image_processor=AutoImageProcessor.from_pretrained(path)."
            )
        self._tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._image_token = _token_text(getattr(self.processor, "image_token", None)) if self._combined else None
        places_token = self._image_token is not None and (
            type(self.processor).__name__ not in _PROCESSORS_PLACING_IMAGE_TOKENS
        )
        if self.prompt_template is None:
            self.prompt_template = "{image_token}\n{text}" if places_token else "{text}"
        if "{text}" not in self.prompt_template:
            raise ValueError(f"MultimodalCollator: prompt_template {self.prompt_template!r} has no '{{text}}' field.")
        template = self.prompt_template
        if places_token and "{image_token}" not in template and self._image_token not in template:
            raise ValueError(
                f"MultimodalCollator: {type(self.processor).__name__} expands the image token {self._image_token!r}, "
                f"which prompt_template {self.prompt_template!r} lacks; add '{{image_token}}' to it."
            )
        if self.view != "text" and self.image_column is None:
            raise ValueError(f"MultimodalCollator: view={self.view!r} needs an image_column.")

    # ------------------------------------------------------------------ public helpers
    def with_view(self, view: str) -> MultimodalCollator:
        """The same collator for another view (``"both"``, ``"text"``, ``"image"``)."""
        return dataclasses.replace(self, view=view)

    @property
    def blank_size(self) -> tuple[int, int]:
        """``(width, height)`` of the blank image of ``view="text"``."""
        if self.blank_image_size is not None:
            return tuple(self.blank_image_size)
        for name in ("crop_size", "size"):
            size = getattr(self._image_proc, name, None)
            if name == "crop_size" and not getattr(self._image_proc, "do_center_crop", False):
                continue
            if isinstance(size, int):
                return size, size
            height, width = _size_field(size, "height"), _size_field(size, "width")
            if height and width:
                return int(width), int(height)
            side = _size_field(size, "shortest_edge") or _size_field(size, "longest_edge")
            if side:
                return int(side), int(side)
        return _DEFAULT_BLANK_SIDE, _DEFAULT_BLANK_SIDE

    @property
    def blank_color(self) -> tuple[int, int, int]:
        """RGB colour of the blank image: the image processor's normalisation mean (grey 128 without one)."""
        if self.blank_image_color is not None:
            return tuple(self.blank_image_color)
        mean = getattr(self._image_proc, "image_mean", None)
        if mean is not None and len(mean) == 3:
            return tuple(int(round(255 * float(m))) for m in mean)
        return 128, 128, 128

    # ------------------------------------------------------------------ collation
    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("MultimodalCollator got an empty batch.")
        texts = [self._prompt(row) for row in rows]
        images = [self._image(row, position) for position, row in enumerate(rows)]
        text_kwargs: dict[str, Any] = {"padding": True}
        if self.max_length is not None and self._image_token is None:
            text_kwargs.update(truncation=True, max_length=self.max_length)
        if self._combined:
            batch = dict(self.processor(images=images, text=texts, return_tensors="pt", **text_kwargs))
        else:
            batch = dict(self._tokenizer(texts, return_tensors="pt", **text_kwargs))
            batch.update(dict(self._image_proc(images, return_tensors="pt")))
        batch.update(encode_targets(rows, self.label_column, self.interaction_column, self.experts))
        return batch

    def _prompt(self, row: dict[str, Any]) -> str:
        text = "" if self.view == "image" else format_text(row, self.text_template)
        if self._image_token is not None and self.max_length is not None:
            text = self._truncate(text, self.max_length)
        return self.prompt_template.format(text=text, image_token=self._image_token or "")

    def _truncate(self, text: str, max_tokens: int) -> str:
        """Cut ``text`` after its first ``max_tokens`` tokens (without special tokens)."""
        try:
            encoding = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
            tokens = self._tokenizer.tokenize(text)
            return text if len(tokens) <= max_tokens else self._tokenizer.convert_tokens_to_string(tokens[:max_tokens])
        offsets = encoding["offset_mapping"]
        return text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]] if max_tokens > 0 else ""

    def _image(self, row: dict[str, Any], position: int) -> Any:
        if self.view == "text":
            return blank_image(self.blank_size, self.blank_color)
        if self.image_column not in row:
            raise ValueError(
                f"MultimodalCollator: rows have no image column {self.image_column!r} (columns: {sorted(row)}). "
                "With the Trainer, set remove_unused_columns=False so the raw columns reach the collator."
            )
        return load_image(row[self.image_column], row_index=self._row_name(row, position), image_root=self.image_root)

    def _row_name(self, row: dict[str, Any], position: int) -> str:
        ident = row.get(self.id_column) if self.id_column else None
        if ROW_INDEX_COLUMN in row:
            return f"{row[ROW_INDEX_COLUMN]}" + (f" (id {ident!r})" if ident is not None else "")
        if ident is not None:
            return f"with id {ident!r}"
        return (
            f"at batch position {position} (run mmoe.data.images.prepare_image_dataset on the dataset to get row "
            "indices in errors)"
        )


def _backbone_config_of(config_or_path: Any) -> Any:
    """A backbone config from a backbone config, an MMoEConfig, a model, or a folder / Hub id."""
    if isinstance(config_or_path, (str, Path)):
        from transformers import AutoConfig

        config_or_path = AutoConfig.from_pretrained(str(config_or_path))
    config = getattr(config_or_path, "config", config_or_path)  # a model
    return getattr(config, "backbone_config", None) or config


def build_collator(
    processor_or_tokenizer: Any,
    backbone_config: Any,
    *,
    image_column: str | None = None,
    text_template: str = "{text}",
    view: str = "both",
    max_length: int | None = 512,
    label_column: str | None = "label",
    interaction_column: str | None = None,
    experts: Sequence[str] | None = None,
    **multimodal_kwargs: Any,
) -> MMoECollator | MultimodalCollator:
    """The collator that fits a backbone: :class:`MMoECollator` for text backbones (including the
    image-captioned route), :class:`MultimodalCollator` for vision-language backbones.

    Args:
        processor_or_tokenizer: what :func:`load_processor` returns for the backbone (a tokenizer, or a
            processor; for a text backbone a processor's ``.tokenizer`` is used).
        backbone_config: the backbone's config, an ``MMoEConfig`` (its ``backbone_config`` is used and its
            ``experts`` become the default), a model, or a folder / Hub id.
        image_column: the dataset's image column; required by VLMs (except ``view="text"``), refused by text
            backbones (caption the images and use ``text_template="{caption} {text}"`` instead).
        view: ``"both"``, ``"text"`` or ``"image"`` (VLMs only; see :class:`MultimodalCollator`).
        **multimodal_kwargs: further :class:`MultimodalCollator` options (``prompt_template``,
            ``image_processor``, ``image_root``, ``blank_image_size``, ...); VLMs only.

    Raises:
        ValueError: a text backbone with an image column / ``view="image"`` / multimodal options, or a VLM
            without an image column.
    """
    config = _backbone_config_of(backbone_config)
    if experts is None:
        experts = getattr(getattr(backbone_config, "config", backbone_config), "experts", None) or DEFAULT_EXPERTS
    if view not in VIEWS:
        raise ValueError(f"build_collator: unknown view {view!r}; use one of {list(VIEWS)}.")
    model_type = config.model_type
    if not is_vision_language(config):
        if image_column is not None:
            raise ValueError(
                f"Backbone {model_type!r} is a text-only model, but an image column {image_column!r} was given. For "
                "the image-captioned route, caption the images and put the caption into the text "
                "(text_template='{caption} {text}', image_column=None); to feed images, use a vision-language "
                "backbone (ViLT, LLaVA, BLIP-2)."
            )
        if view == "image":
            raise ValueError(
                f"Backbone {model_type!r} is a text-only model and has no image-only view; with the captioned route "
                "the image-only input is the caption (text_template='{caption}')."
            )
        if multimodal_kwargs:
            raise ValueError(
                f"Options {sorted(multimodal_kwargs)} apply to vision-language backbones only; backbone "
                f"{model_type!r} is a text-only model."
            )
        tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        return MMoECollator(
            tokenizer,
            text_template=text_template,
            max_length=max_length if max_length is not None else 512,
            label_column=label_column,
            interaction_column=interaction_column,
            experts=list(experts),
        )

    if image_column is None and view != "text":
        raise ValueError(
            f"Backbone {model_type!r} is a vision-language model and needs an image column (image_column='image'); "
            "for its text-only view pass view='text' (a blank image is fed), or use a text backbone for the "
            "image-captioned route."
        )
    text_positions = None if hasattr(config, "text_config") else getattr(config, "max_position_embeddings", None)
    if text_positions is not None and (max_length is None or max_length > text_positions):
        logger.info("Backbone %r embeds at most %d text positions: max_length %s -> %d.", model_type,
                    text_positions, max_length, text_positions)
        max_length = text_positions
    return MultimodalCollator(
        processor_or_tokenizer,
        text_template=text_template,
        image_column=image_column,
        max_length=max_length,
        label_column=label_column,
        interaction_column=interaction_column,
        experts=list(experts),
        view=view,
        **multimodal_kwargs,
    )


def load_processor(name_or_path: str | Path, backbone_config: Any = None, **kwargs: Any) -> Any:
    """Load what a backbone needs to encode inputs: ``AutoProcessor`` for vision-language backbones,
    ``AutoTokenizer`` for text backbones. A tokenizer without a pad token gets its EOS token as pad token.

    Args:
        name_or_path: backbone folder / Hub id, or a saved MMoE folder that holds the processor.
        backbone_config: the backbone config (read from ``name_or_path`` when omitted).
        **kwargs: passed to ``from_pretrained``.
    """
    from transformers import AutoProcessor, AutoTokenizer

    config = _backbone_config_of(backbone_config if backbone_config is not None else name_or_path)
    if is_vision_language(config):
        processor = AutoProcessor.from_pretrained(str(name_or_path), **kwargs)
        if getattr(processor, "image_processor", None) is None:
            raise ValueError(
                f"{name_or_path}: AutoProcessor returned {type(processor).__name__} without an image processor; "
                f"save the processor of the {config.model_type!r} backbone there (processor.save_pretrained)."
            )
        tokenizer = getattr(processor, "tokenizer", None)
    else:
        processor = tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    if tokenizer is not None and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Batches are padded (pooling reads the attention mask); LLMs without a pad token pad with EOS.
        tokenizer.pad_token = tokenizer.eos_token
    return processor
