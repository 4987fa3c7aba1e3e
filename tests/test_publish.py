"""One publish path: ``model.push_to_hub`` and ``push_output_dir`` (``mmoe-train`` / ``mmoe-card --push_to_hub``) make
the same commit, through public APIs only (all offline: the Hub API is intercepted by ``captured_hub``)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from mmoe import MMoEForSequenceClassification, hub_utils
from mmoe.hub_cards import DEFAULT_TAGS, UPLOAD_ALLOWLIST, files_to_upload, push_output_dir, write_model_card
from mmoe.testing import save_tiny_backbone

REPO_ID = "org/mmoe-tiny"
BACKBONE_ID = "hf-internal-testing/tiny-mmoe-backbone"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PACKAGE = Path(__file__).resolve().parents[1] / "mmoe"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like HF_HUB_OFFLINE=1: Hub look-ups go to the local cache at once."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An ``mmoe-train`` output folder of a model that references its backbone by Hub id (so its experts are peft
    adapter folders), with tokenizer, reports, card and plots, a stage folder and a file that must stay local."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        return _finished_run(tmp_path_factory)


def _finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("hub")
    snapshot = cache / ("models--" + BACKBONE_ID.replace("/", "--")) / "snapshots" / COMMIT
    save_tiny_backbone(snapshot, "bert")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)

    model = MMoEForSequenceClassification.from_backbone(str(snapshot), num_labels=2, lora_r=2, router_hidden_size=8)
    model.config.backbone_name_or_path = BACKBONE_ID  # a Hub id: the referenced layout
    out = tmp_path_factory.mktemp("run") / "out"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(snapshot).save_pretrained(out)
    block = {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    results = {
        "split": "test", "baseline": block, "mmoe": block,
        "by_interaction": {system: {i: block for i in model.experts} for system in ("baseline", "mmoe")},
        "router_weights_by_interaction": {i: {e: 1 / 3 for e in model.experts} for i in model.experts},
    }
    (out / "eval_results.json").write_text(json.dumps(results))
    (out / "mmoe_run.json").write_text(json.dumps({"backbone": BACKBONE_ID, "dataset": "tiny"}))
    write_model_card(out)
    (out / "secrets.env").write_text("HF_TOKEN=hf_secret\n")
    (out / "router").mkdir()
    (out / "router" / "model.safetensors").write_bytes(b"stage")
    return {"out": out, "cache": cache}


def _load(run: dict[str, Path]) -> MMoEForSequenceClassification:
    return MMoEForSequenceClassification.from_pretrained(run["out"], cache_dir=str(run["cache"]), local_files_only=True)


def _sent(commit: dict[str, Any]) -> list[str]:
    return sorted(op.path_in_repo for op in commit["operations"])


def test_model_push_to_hub_and_push_output_dir_make_the_same_commit(
    finished_run: dict[str, Path], captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    out = finished_run["out"]
    card_before = (out / "README.md").read_text()
    model = _load(finished_run)
    model.push_to_hub(REPO_ID, tags=["sarcasm"], private=True, commit_description="tiny run")
    push_output_dir(out, REPO_ID, update_card=False, tags=["sarcasm"])

    from_model, from_folder = captured_hub["create_commit"]
    assert captured_hub["create_repo"][0]["private"] is True and from_model["commit_description"] == "tiny run"
    # The same files: weights, config, remote code, expert adapter folders, tokenizer, card, plots and reports.
    assert _sent(from_model) == _sent(from_folder) == sorted(files_to_upload(out))
    expected = {"config.json", "model.safetensors", "modeling_mmoe.py", "configuration_mmoe.py", "fusion.py",
                "tokenizer_config.json", "README.md", "eval_results.json", "mmoe_run.json", "interaction_f1.png"}
    expected |= {f"{expert}/{name}" for expert in model.experts
                 for name in ("adapter_config.json", "adapter_model.safetensors")}
    assert expected <= set(_sent(from_model)), expected - set(_sent(from_model))
    assert "secrets.env" not in _sent(from_model) and not any(p.startswith("router/") for p in _sent(from_model))
    # The run's own card (not transformers' generic one, nor peft's), its body intact, with the tags added.
    assert from_model["cards"] == from_folder["cards"]
    card = ModelCard(from_model["cards"][0])
    assert "sarcasm" in card.data.tags and set(DEFAULT_TAGS) <= set(card.data.tags)
    assert card.text == ModelCard(card_before).text and "generated by mmoe.hub_cards" in card.text
    assert (out / "README.md").read_text() == card_before  # the folder itself is not modified


def test_transformers_push_to_hub_would_replace_the_runs_card(
    finished_run: dict[str, Path], captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    """Why MMoE's push_to_hub has a hook: transformers' own writes its card (the repository's, or a generic one)
    over the README.md that save_pretrained wrote. Should this test fail, the hook in modeling_mmoe.py can go."""
    from transformers import PreTrainedModel

    PreTrainedModel.push_to_hub(_load(finished_run), REPO_ID, tags=["sarcasm"])
    (card,) = captured_hub["create_commit"][0]["cards"]
    assert "generated by mmoe.hub_cards" not in card and "sarcasm" in ModelCard(card).data.tags


def test_save_pretrained_leaves_the_runs_results_behind(finished_run: dict[str, Path], tmp_path: Path) -> None:
    """A model loaded from a run and saved elsewhere (e.g. trained further) must not carry a card and results that
    describe the run rather than it; only the push adds them."""
    out = finished_run["out"]
    model = _load(finished_run)
    model.save_pretrained(tmp_path / "copy")
    saved = {p.name for p in (tmp_path / "copy").iterdir() if p.is_file()}
    assert {"config.json", "model.safetensors"} <= saved
    assert not {"eval_results.json", "mmoe_run.json", "interaction_f1.png"} & saved
    copied = hub_utils.copy_companion_files(out, tmp_path / "copy")
    assert {"README.md", "eval_results.json", "mmoe_run.json", "interaction_f1.png", "tokenizer.json"} <= set(copied)
    assert (tmp_path / "copy" / "README.md").read_text() == (out / "README.md").read_text()  # not peft's card
    assert files_to_upload(tmp_path / "copy") == files_to_upload(out)
    assert hub_utils.copy_companion_files(out, out) == []  # never onto itself


def test_a_model_without_a_run_card_is_pushed_by_transformers(
    tmp_path: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    """No run folder, no card of ours: transformers' own push_to_hub, whose card carries the tags."""
    model = MMoEForSequenceClassification.from_backbone(
        str(save_tiny_backbone(tmp_path / "backbone")), num_labels=2, lora_r=2, router_hidden_size=8
    )
    model.push_to_hub(REPO_ID, tags=["sarcasm"])
    (commit,) = captured_hub["create_commit"]
    assert {"config.json", "model.safetensors", "modeling_mmoe.py", "README.md"} <= set(_sent(commit))
    assert "sarcasm" in ModelCard(commit["cards"][0]).data.tags


def test_companion_files_are_defined_once_and_allowlisted() -> None:
    assert set(hub_utils.COMPANION_FILES) <= set(UPLOAD_ALLOWLIST)
    source = (PACKAGE / "hub_cards" / "publish.py").read_text()
    assert "*COMPANION_FILES" in source and '"README.md"' not in source and ".png" not in source
    assert not any("*" in name for name in UPLOAD_ALLOWLIST)  # exact names: no glob matches a look-alike


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` of every absolute import of ``path``, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


REMOTE_CODE = hub_utils.package_remote_code_files()
"""Derived from the package's relative imports (not kept by hand): every module checked below is uploaded."""


def test_the_remote_code_is_what_save_pretrained_copies(finished_run: dict[str, Path]) -> None:
    """Every module save_pretrained copies is remote code, passes the import check below and is uploaded."""
    saved = {p.name for p in finished_run["out"].glob("*.py")}
    assert saved <= set(REMOTE_CODE) and {"modeling_mmoe.py", "configuration_mmoe.py"} <= saved, saved
    assert {"modeling_i2moe.py", "fused_lora.py"} <= set(REMOTE_CODE)
    assert saved <= set(files_to_upload(finished_run["out"]))
    assert "hub_utils.py" not in saved


@pytest.mark.parametrize("module", REMOTE_CODE)
def test_remote_code_uses_public_apis_only(module: str) -> None:
    """The remote code imports only torch, transformers and peft (and siblings, relatively), no private names of
    them, and holds no publishing logic: no huggingface_hub, no private transformers upload method."""
    path = PACKAGE / module
    for name, names in _imports(path):
        top = name.split(".")[0]
        assert top in {"torch", "transformers", "peft"} or top in sys.stdlib_module_names or top == "__future__", (
            f"{module} imports {name}"
        )
        assert not any(part.startswith("_") for part in name.split(".")[1:]), f"{module} imports {name}"
        assert not any(n.startswith("_") for n in names), f"{module} imports private {names} from {name}"
    source = path.read_text()
    for private in ("_upload_modified_files", "_get_files_timestamps", "hf_api(", "utils.hub", "create_commit"):
        assert private not in source, f"{module} uses {private}"


def test_remote_code_model_is_pushed_by_transformers(
    finished_run: dict[str, Path], captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    """Loaded as remote code (what ``trust_remote_code`` gives where mmoe is not imported: with mmoe imported, the
    Auto classes pick its registered classes), the class has no publisher hook, since only ``import mmoe`` sets
    one: its push_to_hub is transformers' own, which still sends weights, adapters and remote code, under a
    generic card."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    remote_class = get_class_from_dynamic_module("modeling_mmoe.MMoEForSequenceClassification", finished_run["out"])
    assert remote_class.__module__.startswith("transformers_modules") and remote_class.hub_publisher is None
    model = remote_class.from_pretrained(
        finished_run["out"], cache_dir=str(finished_run["cache"]), local_files_only=True
    )
    assert MMoEForSequenceClassification.hub_publisher is hub_utils.push_to_hub
    model.push_to_hub(REPO_ID, tags=["sarcasm"])
    (commit,) = captured_hub["create_commit"]
    assert {"config.json", "model.safetensors", "modeling_mmoe.py"} <= set(_sent(commit))
    assert {f"{expert}/adapter_model.safetensors" for expert in model.config.experts} <= set(_sent(commit))
    (card,) = commit["cards"]
    assert "generated by mmoe.hub_cards" not in card and "sarcasm" in ModelCard(card).data.tags


