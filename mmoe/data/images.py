"""Images in datasets: decode any image cell to an RGB ``PIL.Image``, naming the row when a file is broken.

An image column may hold PIL images, file paths (``str`` / ``Path``, relative ones resolved against
``image_root``), raw ``bytes``, ``numpy`` arrays, or the ``{"bytes": ..., "path": ...}`` dicts that a
``datasets.Image(decode=False)`` column yields. A ``datasets.Image()`` column with the default
``decode=True`` is decoded by ``datasets`` itself when a row is read, and a broken file then fails inside
``datasets`` without saying which row; :func:`prepare_image_dataset` switches the column to ``decode=False`` and
adds a row-index column, so that the collators decode the images themselves and name the row.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

ROW_INDEX_COLUMN = "row_index"
"""Column added by :func:`prepare_image_dataset`: each row's position in the original dataset."""


def _describe_row(row_index: Any) -> str:
    return "an image" if row_index is None else f"the image of dataset row {row_index}"


def _source_of(value: Any) -> str | None:
    """Path (or a short description) of an image cell, for error messages."""
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, Mapping):
        return value.get("path") or ("<bytes>" if value.get("bytes") is not None else None)
    if isinstance(value, (bytes, bytearray)):
        return "<bytes>"
    return None


def load_image(value: Any, row_index: Any = None, image_root: str | Path | None = None) -> Image.Image:
    """Decode one image cell into an RGB ``PIL.Image``.

    Args:
        value: a ``PIL.Image``; a file path (``str``/``Path``); ``bytes``; a ``numpy`` array ``[H, W]`` or
            ``[H, W, C]``; or a ``{"bytes": ..., "path": ...}`` dict (``datasets.Image(decode=False)``), whose
            bytes win over its path.
        row_index: the dataset row (an index or an id), quoted in error messages.
        image_root: folder against which relative paths are resolved (default: the working directory).

    Returns:
        The image, converted to RGB (grey, palette and RGBA images included), fully loaded into memory.

    Raises:
        ValueError: the cell is empty, of an unknown type, a missing file, or bytes/a file that PIL cannot
            decode; the message names ``row_index`` and the path.
    """
    where = _describe_row(row_index)
    source = _source_of(value)
    if value is None:
        raise ValueError(f"Could not load {where}: the image cell is empty (None).")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, Mapping):
            if value.get("bytes") is not None:
                image = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                image = Image.open(_resolve(value["path"], image_root))
            else:
                raise ValueError("the image dict has neither 'bytes' nor 'path'")
        elif isinstance(value, (str, Path)):
            image = Image.open(_resolve(value, image_root))
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(bytes(value)))
        elif hasattr(value, "__array__"):
            image = Image.fromarray(value.__array__())
        else:
            raise ValueError(
                f"unsupported image value of type {type(value).__name__}; use a PIL image, a path, bytes, a numpy "
                "array or a {'bytes': ..., 'path': ...} dict"
            )
        image.load()
        return image.convert("RGB") if image.mode != "RGB" else image
    except FileNotFoundError as error:
        raise ValueError(f"Could not load {where}: file not found ({source!r}).") from error
    except (OSError, ValueError, TypeError, SyntaxError) as error:  # PIL's decoding errors are OSError subclasses
        raise ValueError(f"Could not decode {where} ({source!r}): {error}") from error


def _resolve(path: str | Path, image_root: str | Path | None) -> Path:
    path = Path(path).expanduser()
    if image_root is not None and not path.is_absolute():
        path = Path(image_root) / path
    return path


def blank_image(size: tuple[int, int], color: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """A constant RGB image of ``size = (width, height)``: the "no image" input of text-only views."""
    return Image.new("RGB", (int(size[0]), int(size[1])), tuple(int(c) for c in color))


def prepare_image_dataset(dataset: Any, image_column: str = "image", add_row_index: bool = True) -> Any:
    """Get a ``datasets.Dataset`` ready for :class:`~mmoe.data.multimodal_collator.MultimodalCollator`.

    * a ``datasets.Image()`` column is cast to ``Image(decode=False)``: rows then carry ``{"bytes", "path"}``
      dicts and the collator decodes them with :func:`load_image`, so a broken file names its row instead
      of failing inside ``datasets``;
    * a ``row_index`` column (each row's position) is added when ``add_row_index`` and it is missing.

    Works on a ``Dataset`` or a ``DatasetDict`` (each split indexed from 0). Other columns are untouched.
    """
    from datasets import DatasetDict
    from datasets import Image as ImageFeature

    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {name: prepare_image_dataset(split, image_column, add_row_index) for name, split in dataset.items()}
        )
    if image_column not in dataset.column_names:
        raise ValueError(
            f"prepare_image_dataset: no image column {image_column!r}; the dataset has {dataset.column_names}."
        )
    feature = dataset.features[image_column]
    if isinstance(feature, ImageFeature) and feature.decode:
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    if add_row_index and ROW_INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(ROW_INDEX_COLUMN, list(range(len(dataset))))
    return dataset


def check_images(
    dataset: Any, image_column: str = "image", image_root: str | Path | None = None, max_errors: int = 5
) -> None:
    """Decode every image of ``dataset`` once and fail early, listing the broken rows.

    Raises:
        ValueError: naming up to ``max_errors`` broken rows (index and path) and how many there are in all.
    """
    from datasets import Image as ImageFeature

    feature = dataset.features.get(image_column) if hasattr(dataset, "features") else None
    if isinstance(feature, ImageFeature) and feature.decode:
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    errors: list[str] = []
    count = 0
    for index, row in enumerate(dataset.select_columns([image_column])):
        try:
            load_image(row[image_column], row_index=index, image_root=image_root)
        except ValueError as error:
            count += 1
            if len(errors) < max_errors:
                errors.append(str(error))
    if count:
        more = f" (and {count - len(errors)} more)" if count > len(errors) else ""
        raise ValueError(f"{count} image(s) in column {image_column!r} cannot be loaded{more}:\n" + "\n".join(errors))
