"""Tiny vision-language backbones, processors and image datasets built from code (nothing is downloaded).

Three families, one per route of the MMoE paper that feeds pixels to the model:

* ``"vilt"``: fusion VLM (ViLT: one transformer over text tokens and image patches), the paper's ALBEF route;
* ``"llava"``: multimodal LLM (CLIP vision tower + projector + a Qwen2 or Llama language model);
* ``"blip-2"``: multimodal LLM (vision tower + Q-Former + Qwen2 language model), the paper's BLIP-2 route.

:func:`save_tiny_vlm` writes a folder that ``AutoModel.from_pretrained`` and ``AutoProcessor.from_pretrained``
load offline, exactly like a downloaded checkpoint. The processors use the PIL ("slow") image processors, so
torchvision is never needed. All models are randomly initialised and have a few tens of thousands of parameters;
images are 32 x 32 pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken
from transformers import AutoConfig, AutoModel, PreTrainedConfig

from .configuration_mmoe import DEFAULT_EXPERTS
from .testing import tiny_backbone_config, tiny_tokenizer

VLM_FAMILIES: tuple[str, ...] = ("vilt", "llava", "blip-2")
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
IMAGE_TOKEN = "<image>"
BLIP2_NUM_QUERY_TOKENS = 4

_TEXTS = [
    "what a warm sunny day",
    "snow again , loving this spring",
    "the dog is so happy in the park",
    "perfect weather for the beach",
    "a great day to stay in the house",
    "rain again , just wonderful",
    "the cat is smiling at the sun",
    "cold and dark , lovely",
]
_CAPTIONS = ["a photo of a red sky", "a picture of a snowy street", "an image of a green park", "a photo of a cat"]


def _check_family(family: str) -> None:
    if family not in VLM_FAMILIES:
        raise ValueError(f"Unknown tiny VLM family {family!r}; use one of {list(VLM_FAMILIES)}.")


def tiny_vlm_tokenizer(family: str) -> Any:
    """:func:`~mmoe.testing.tiny_tokenizer`, plus the ``<image>`` token and left padding for multimodal LLMs."""
    _check_family(family)
    tokenizer = tiny_tokenizer()
    if family in ("llava", "blip-2"):
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        # Decoder LLMs pool the last non-padding token, which left padding keeps at the end; init_kwargs makes
        # the choice survive save_pretrained.
        tokenizer.padding_side = "left"
        tokenizer.init_kwargs["padding_side"] = "left"
    return tokenizer


def tiny_vlm_config(family: str = "vilt", text_family: str = "qwen2") -> PreTrainedConfig:
    """A randomly initialisable config of a tiny VLM (32 x 32 images, hidden size 32, 2 layers).

    Args:
        family: ``"vilt"``, ``"llava"`` or ``"blip-2"``.
        text_family: language model of ``"llava"`` (``"qwen2"`` or ``"llama"``); BLIP-2 always uses Qwen2.
    """
    _check_family(family)
    tokenizer = tiny_vlm_tokenizer(family)
    vocab_size = len(tokenizer)
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": TINY_PATCH_SIZE,
    }
    if family == "vilt":
        return AutoConfig.for_model(
            "vilt",
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,  # text positions only; image patches have their own embeddings
            image_size=TINY_IMAGE_SIZE,
            patch_size=TINY_PATCH_SIZE,
            pad_token_id=0,
        )
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if family == "llava":
        return AutoConfig.for_model(
            "llava",
            vision_config=AutoConfig.for_model("clip_vision_model", projection_dim=32, **vision),
            text_config=tiny_backbone_config(text_family, vocab_size=vocab_size),
            image_token_index=image_token_id,
            image_seq_length=(TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2,
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
        )
    return AutoConfig.for_model(
        "blip-2",
        vision_config=vision,
        qformer_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "cross_attention_frequency": 1,
        },
        text_config=tiny_backbone_config("qwen2", vocab_size=vocab_size).to_dict(),
        num_query_tokens=BLIP2_NUM_QUERY_TOKENS,
        image_token_index=image_token_id,
    )


def tiny_vlm_processor(family: str = "vilt") -> Any:
    """The processor of a tiny VLM: the family's processor class over :func:`tiny_vlm_tokenizer` and a slow
    (PIL) image processor producing 32 x 32 pixels."""
    _check_family(family)
    tokenizer = tiny_vlm_tokenizer(family)
    if family == "vilt":
        from transformers import ViltProcessor
        from transformers.models.vilt.image_processing_pil_vilt import ViltImageProcessorPil

        image_processor = ViltImageProcessorPil(size={"shortest_edge": TINY_IMAGE_SIZE}, size_divisor=TINY_PATCH_SIZE)
        return ViltProcessor(image_processor=image_processor, tokenizer=tokenizer)
    if family == "llava":
        from transformers import LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=TINY_PATCH_SIZE,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
            image_token=IMAGE_TOKEN,
        )
    from transformers import Blip2Processor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    image_processor = BlipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=BLIP2_NUM_QUERY_TOKENS)


def save_tiny_vlm(path: str | Path, family: str = "vilt", seed: int = 0, text_family: str = "qwen2") -> Path:
    """Write a random tiny VLM (``AutoModel``) and its processor to ``path``; return ``path``.

    The folder loads offline with ``AutoModel.from_pretrained(path)`` and ``AutoProcessor.from_pretrained(path)``.
    """
    path = Path(path)
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_vlm_config(family, text_family=text_family))
    model.save_pretrained(path)
    tiny_vlm_processor(family).save_pretrained(path)
    return path


def tiny_images(n: int, size: int = TINY_IMAGE_SIZE, seed: int = 0) -> list[Image.Image]:
    """``n`` random RGB images of ``size`` x ``size`` pixels (a flat colour plus noise, so they differ)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = rng.integers(0, 256, size=3)
        noise = rng.integers(-40, 41, size=(size, size, 3))
        images.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), mode="RGB"))
    return images


def tiny_image_text_dataset(n: int = 8, image_size: int = TINY_IMAGE_SIZE, seed: int = 0) -> Any:
    """A ``datasets.Dataset`` of ``n`` rows: ``id``, ``text``, ``caption``, ``image`` (``datasets.Image()``),
    ``label`` (0/1) and ``interaction`` (cycling through the three experts)."""
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "caption": Value("string"),
            "image": ImageFeature(),
            "label": ClassLabel(names=["no", "yes"]),
            "interaction": Value("string"),
        }
    )
    return Dataset.from_dict(
        {
            "id": [f"tiny-{i:03d}" for i in range(n)],
            "text": [_TEXTS[i % len(_TEXTS)] for i in range(n)],
            "caption": [_CAPTIONS[i % len(_CAPTIONS)] for i in range(n)],
            "image": tiny_images(n, image_size, seed),
            "label": [i % 2 for i in range(n)],
            "interaction": [DEFAULT_EXPERTS[i % len(DEFAULT_EXPERTS)] for i in range(n)],
        },
        features=features,
    )
