"""Collators and image loading: text batches, image + text batches, views, prompts, truncation, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from mmoe.data.collators import MMoECollator
from mmoe.data.images import ROW_INDEX_COLUMN, blank_image, check_images, load_image, prepare_image_dataset
from mmoe.data.multimodal_collator import MultimodalCollator, build_collator
from mmoe.testing import tiny_backbone_config, tiny_tokenizer
from mmoe.testing_vision import (
    BLIP2_NUM_QUERY_TOKENS,
    IMAGE_TOKEN,
    TINY_IMAGE_SIZE,
    tiny_image_text_dataset,
    tiny_images,
    tiny_vlm_config,
    tiny_vlm_processor,
)

ROWS = [
    {"text": "what a warm sunny day", "caption": "a photo of snow", "label": 1, "interaction": "synergy"},
    {"text": "nice", "caption": "a photo of a beach", "label": 0, "interaction": "redundancy"},
]


@pytest.fixture(scope="module")
def rows_with_images() -> list[dict]:
    return [{**row, "image": image} for row, image in zip(ROWS, tiny_images(2, size=40, seed=1))]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------- images
def test_load_image_accepts_every_cell_type(tmp_path):
    image = tiny_images(1, seed=3)[0]
    path = tmp_path / "a.png"
    image.save(path)
    expected = np.asarray(image)
    for value in (image, str(path), path, _png_bytes(image), {"bytes": _png_bytes(image), "path": None},
                  {"bytes": None, "path": str(path)}, np.asarray(image)):
        loaded = load_image(value)
        assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), expected), type(value)
    assert np.array_equal(np.asarray(load_image("a.png", image_root=tmp_path)), expected)


def test_load_image_converts_to_rgb():
    assert load_image(Image.new("L", (4, 4), 7)).mode == "RGB"
    assert load_image(Image.new("RGBA", (4, 4), (1, 2, 3, 4))).getpixel((0, 0)) == (1, 2, 3)
    assert load_image(Image.new("P", (4, 4))).mode == "RGB"


def test_load_image_errors_name_the_row_and_path(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\x00not an image")
    with pytest.raises(ValueError, match=r"row 7 .*broken\.jpg"):
        load_image(str(broken), row_index=7)
    with pytest.raises(ValueError, match=r"row 3 .*broken\.jpg"):
        load_image({"bytes": None, "path": str(broken)}, row_index=3)
    with pytest.raises(ValueError, match=r"row 1: file not found .*missing\.png"):
        load_image(str(tmp_path / "missing.png"), row_index=1)
    with pytest.raises(ValueError, match=r"row 0 .*<bytes>"):
        load_image(b"garbage", row_index=0)
    with pytest.raises(ValueError, match="empty"):
        load_image(None, row_index=2)
    with pytest.raises(ValueError, match="unsupported image value of type int"):
        load_image(5)


def test_blank_image():
    image = blank_image((6, 4), (1, 2, 3))
    assert image.size == (6, 4) and (np.asarray(image) == np.array([1, 2, 3], dtype=np.uint8)).all()


def test_prepare_image_dataset_and_check_images(tmp_path):
    dataset = tiny_image_text_dataset(3)
    assert dataset.features["image"].decode
    prepared = prepare_image_dataset(dataset)
    assert isinstance(prepared.features["image"], ImageFeature) and not prepared.features["image"].decode
    assert prepared[ROW_INDEX_COLUMN] == [0, 1, 2]
    assert set(prepared[1]["image"]) == {"bytes", "path"}
    check_images(prepared)
    check_images(dataset)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    good = tmp_path / "good.png"
    tiny_images(1)[0].save(good)
    bad = Dataset.from_dict({"image": [str(broken), str(good), str(tmp_path / "gone.png")]})
    with pytest.raises(ValueError, match=r"(?s)2 image\(s\).*row 0 .*broken\.png.*\n.*row 2: file not found"):
        check_images(bad)
    with pytest.raises(ValueError, match="no image column 'picture'"):
        prepare_image_dataset(dataset, "picture")


# ---------------------------------------------------------------------------------------------------- text
def test_mmoe_collator_unchanged():
    batch = MMoECollator(tiny_tokenizer(), text_template="{caption} | {text}", interaction_column="interaction")(ROWS)
    assert batch["labels"].tolist() == [1, 0]
    assert batch["interaction_labels"].tolist() == [2, 0]
    expected = tiny_tokenizer()(["a photo of snow | what a warm sunny day", "a photo of a beach | nice"], padding=True)
    assert batch["input_ids"].tolist() == expected["input_ids"]
    with pytest.raises(ValueError, match="not one of the model's experts"):
        MMoECollator(tiny_tokenizer(), interaction_column="interaction")([{**ROWS[0], "interaction": "other"}])


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_build_collator_text_backbone_captioned_route(family):
    collator = build_collator(tiny_tokenizer(), tiny_backbone_config(family), text_template="{caption} {text}")
    assert isinstance(collator, MMoECollator)
    assert collator(ROWS)["input_ids"].shape[0] == 2
    # A processor's tokenizer is used for text backbones.
    processor = tiny_vlm_processor("vilt")
    assert build_collator(processor, tiny_backbone_config(family)).tokenizer is processor.tokenizer
    with pytest.raises(ValueError, match="image-captioned route"):
        build_collator(tiny_tokenizer(), tiny_backbone_config(family), image_column="image")
    with pytest.raises(ValueError, match="no image-only view"):
        build_collator(tiny_tokenizer(), tiny_backbone_config(family), view="image")
    with pytest.raises(ValueError, match="vision-language backbones only"):
        build_collator(tiny_tokenizer(), tiny_backbone_config(family), prompt_template="{text}")


# ---------------------------------------------------------------------------------------------------- images + text
def test_vilt_collator_batch(rows_with_images):
    collator = build_collator(
        tiny_vlm_processor("vilt"), tiny_vlm_config("vilt"), image_column="image", interaction_column="interaction"
    )
    assert isinstance(collator, MultimodalCollator)
    assert collator.max_length == 64  # clamped to ViLT's text positions
    batch = collator(rows_with_images)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "pixel_values", "pixel_mask", "labels",
                          "interaction_labels"}
    assert batch["pixel_values"].shape[:2] == (2, 3) and batch["pixel_mask"].shape[0] == 2
    assert batch["labels"].tolist() == [1, 0] and batch["interaction_labels"].tolist() == [2, 0]
    short = MultimodalCollator(tiny_vlm_processor("vilt"), max_length=4)(rows_with_images)
    assert short["input_ids"].shape[1] == 4


def test_llava_prompt_holds_expanded_image_tokens_and_truncation_keeps_them(rows_with_images):
    processor = tiny_vlm_processor("llava")
    image_token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    num_image_tokens = (TINY_IMAGE_SIZE // 8) ** 2
    full = MultimodalCollator(processor)(rows_with_images)
    assert (full["input_ids"] == image_token_id).sum(1).tolist() == [num_image_tokens] * 2
    assert full["attention_mask"].shape == full["input_ids"].shape
    assert (full["attention_mask"][:, -1] == 1).all()  # left padding: the last position is a real token
    short = MultimodalCollator(processor, max_length=2)(rows_with_images)
    assert (short["input_ids"] == image_token_id).sum(1).tolist() == [num_image_tokens] * 2
    assert short["attention_mask"].sum(1).max() <= num_image_tokens + 2 + 3  # + [CLS], "\n", [SEP]
    chat = MultimodalCollator(processor, prompt_template="user : {image_token} {text} answer :")(rows_with_images[:1])
    assert processor.tokenizer.decode(chat["input_ids"][0][-3:]) == "answer : [SEP]"
    with pytest.raises(ValueError, match="lacks"):
        MultimodalCollator(processor, prompt_template="{text}")
    with pytest.raises(ValueError, match="no '\\{text\\}' field"):
        MultimodalCollator(processor, prompt_template="{image_token}")


def test_blip2_processor_prepends_its_query_tokens(rows_with_images):
    processor = tiny_vlm_processor("blip-2")
    collator = MultimodalCollator(processor)
    assert collator.prompt_template == "{text}"
    batch = collator(rows_with_images)
    image_token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert (batch["input_ids"] == image_token_id).sum(1).tolist() == [BLIP2_NUM_QUERY_TOKENS] * 2
    assert batch["attention_mask"][:, :BLIP2_NUM_QUERY_TOKENS].all()


def test_tokenizer_plus_image_processor(rows_with_images):
    processor = tiny_vlm_processor("vilt")
    collator = MultimodalCollator(processor.tokenizer, image_processor=processor.image_processor)
    separate, combined = collator(rows_with_images), MultimodalCollator(processor)(rows_with_images)
    for key in ("input_ids", "attention_mask", "pixel_values", "pixel_mask"):
        torch.testing.assert_close(separate[key], combined[key])


@pytest.mark.parametrize("family", ["vilt", "llava", "blip-2"])
def test_views_blank_image_and_empty_text(family, rows_with_images):
    collator = MultimodalCollator(tiny_vlm_processor(family))
    assert collator.blank_size == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    text_view = collator.with_view("text")
    # The text view needs no image column at all.
    batch = text_view([{key: value for key, value in row.items() if key != "image"} for row in rows_with_images])
    assert batch["pixel_values"].abs().max() < 0.02
    image_view = collator.with_view("image")(rows_with_images)
    assert image_view["input_ids"].shape[1] < collator(rows_with_images)["input_ids"].shape[1]
    custom = MultimodalCollator(tiny_vlm_processor(family), view="text", blank_image_color=(0, 0, 0))
    assert custom(rows_with_images)["pixel_values"].max() <= -1.0  # black, normalised
    with pytest.raises(ValueError, match="unknown view"):
        MultimodalCollator(tiny_vlm_processor(family), view="audio")


def test_multimodal_collator_errors(rows_with_images):
    collator = MultimodalCollator(tiny_vlm_processor("vilt"))
    with pytest.raises(ValueError, match="no image column 'image'.*remove_unused_columns=False"):
        collator([{"text": "hi", "label": 0}])
    with pytest.raises(ValueError, match=r"with id 'x7'"):
        collator([{"text": "hi", "label": 0, "image": b"junk", "id": "x7"}])
    with pytest.raises(ValueError, match=r"batch position 1"):
        collator([rows_with_images[0], {**rows_with_images[1], "image": b"junk"}])
    with pytest.raises(ValueError, match="needs an image column"):
        build_collator(tiny_vlm_processor("llava"), tiny_vlm_config("llava"))
    assert build_collator(tiny_vlm_processor("llava"), tiny_vlm_config("llava"), view="text").view == "text"
