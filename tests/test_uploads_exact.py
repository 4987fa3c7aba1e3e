"""Uploads send an exact set of files: the names the model, its tokenizer/processor and the run wrote, never a
look-alike of them, never a symlink, and the remote code the package's imports reach (all offline: the Hub API is
intercepted by ``captured_hub``)."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers.dynamic_module_utils import get_relative_import_files

from mmoe import (
    I2MoEConfig,
    I2MoEForSequenceClassification,
    MMoEConfig,
    MMoEForSequenceClassification,
    hub_utils,
)
from mmoe.hub_cards import UPLOAD_ALLOWLIST, files_to_upload, push_output_dir
from mmoe.hub_cards.plots import PLOT_FILES
from mmoe.testing import save_tiny_backbone, tiny_backbone_config

REPO_ID = "org/mmoe-tiny"
PACKAGE = Path(hub_utils.__file__).resolve().parent

LOOK_ALIKES = (
    "tokenizer_credentials.env",
    "vocab.passwords",
    "chat_template_private_notes.txt",
    "screenshot_of_desktop.png",
    "private_other_model.safetensors",
    "config.json.bak",
    "model.safetensors.old",
)
SECRET = "HF_TOKEN=hf_outside_secret\n"


def _sent(commit: dict[str, Any]) -> list[str]:
    return sorted(op.path_in_repo for op in commit["operations"])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MMoE saved with ``save_pretrained`` (embedded layout: the backbone is a local folder)."""
    root = tmp_path_factory.mktemp("exact")
    backbone = save_tiny_backbone(root / "backbone", "bert")
    model = MMoEForSequenceClassification.from_backbone(str(backbone), num_labels=2, lora_r=2, router_hidden_size=8)
    model.save_pretrained(root / "saved")
    shutil.copy2(backbone / "tokenizer.json", root / "saved" / "tokenizer.json")
    shutil.copy2(backbone / "tokenizer_config.json", root / "saved" / "tokenizer_config.json")
    return root / "saved"


@pytest.fixture
def run_folder(saved_model: Path, tmp_path: Path) -> Path:
    """An output folder: the saved model, the run's card, report and plot, plus look-alikes of allowlisted names and
    symlinks (one to a file outside the folder, under an allowlisted name)."""
    out = tmp_path / "out"
    shutil.copytree(saved_model, out)
    (out / "README.md").write_text("---\nlicense: mit\n---\n# A run\n")
    (out / "eval_results.json").write_text(json.dumps({"mmoe": {"accuracy": 0.5}}))
    (out / "mmoe_run.json").write_text(json.dumps({"backbone": "tiny"}))
    (out / "interaction_f1.png").write_bytes(b"\x89PNG plot")
    for name in LOOK_ALIKES:
        (out / name).write_text(SECRET)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text(SECRET)
    (out / "special_tokens_map.json").symlink_to(outside / "secret.json")  # an allowlisted name, outside content
    (out / "vocab.txt").symlink_to(out / "tokenizer.json")  # a symlink inside the folder is not sent either
    return out


def _expected_root(out: Path) -> set[str]:
    saved_py = {p.name for p in out.glob("*.py")}
    return {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "eval_results.json", "mmoe_run.json", "interaction_f1.png", *saved_py}


def test_files_to_upload_is_exact_and_names_what_it_leaves_out(
    run_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        selected = files_to_upload(run_folder)
    assert set(selected) == _expected_root(run_folder)
    assert not set(LOOK_ALIKES) & set(selected)
    assert "special_tokens_map.json" not in selected and "vocab.txt" not in selected
    for name in (*LOOK_ALIKES, "special_tokens_map.json (a symlink)", "vocab.txt (a symlink)"):
        assert name in caplog.text


def test_push_output_dir_sends_no_look_alike_and_no_outside_content(
    run_folder: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    push_output_dir(run_folder, REPO_ID, update_card=False)
    (commit,) = captured_hub["create_commit"]
    assert set(_sent(commit)) == _expected_root(run_folder)
    root = run_folder.resolve()
    for op in commit["operations"]:
        source = Path(op.path_or_fileobj)
        assert not source.is_symlink() and source.resolve().is_relative_to(root), op
        assert SECRET not in source.read_bytes().decode("utf-8", "replace")


def test_model_push_to_hub_sends_the_same_exact_set(
    run_folder: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    """``model.push_to_hub`` re-saves the model and copies the run's companions: the same names, no look-alike,
    and the outside file behind the symlink is not copied in."""
    MMoEForSequenceClassification.from_pretrained(run_folder).push_to_hub(REPO_ID)
    (commit,) = captured_hub["create_commit"]
    assert _sent(commit) == files_to_upload(run_folder)
    assert not set(LOOK_ALIKES) & set(_sent(commit)) and "special_tokens_map.json" not in _sent(commit)
    assert not any(SECRET in card for card in commit["cards"])
    assert hub_utils.companion_files(run_folder) == sorted(
        run_folder / name for name in ("README.md", "eval_results.json", "interaction_f1.png", "mmoe_run.json",
                                       "tokenizer.json", "tokenizer_config.json")
    )


def test_commit_folder_refuses_a_symlink_it_is_handed(
    run_folder: Path, captured_hub: dict[str, list[dict[str, Any]]]
) -> None:
    with pytest.raises(ValueError, match="special_tokens_map.json"):
        hub_utils.commit_folder(run_folder, REPO_ID, ["config.json", "special_tokens_map.json"])
    assert captured_hub["create_commit"] == []


def test_adapter_folders_travel_exactly_and_never_through_a_symlink(tmp_path: Path) -> None:
    folder = tmp_path / "ref"
    folder.mkdir()
    config = {"model_type": "mmoe", "save_backbone": False, "experts": ["redundancy", "synergy"],
              "router_input": "adapter"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"weights")
    for adapter in ("redundancy", "synergy", "router_adapter"):
        (folder / adapter).mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_notes_private.txt"):
            (folder / adapter / name).write_text("{}")
    (folder / "stray_adapter").mkdir()
    (folder / "stray_adapter" / "adapter_model.safetensors").write_text("{}")
    expected = {f"{a}/{n}" for a in ("redundancy", "synergy", "router_adapter")
                for n in ("adapter_config.json", "adapter_model.safetensors")}
    assert set(files_to_upload(folder)) == {"config.json", "model.safetensors"} | expected

    outside = tmp_path / "outside_adapter"
    shutil.move(folder / "synergy", outside)
    (folder / "synergy").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FileNotFoundError, match="synergy/adapter_config.json"):
        files_to_upload(folder)


def test_sharded_weights_travel_with_exactly_their_shards(tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {"a": shards[0], "b": shards[1]}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for name in [*shards, "model-00003-of-00002.safetensors"]:
        (folder / name).write_bytes(b"w")
    assert files_to_upload(folder) == sorted(["config.json", "model.safetensors.index.json", *shards])
    (folder / shards[1]).unlink()
    with pytest.raises(FileNotFoundError, match=shards[1]):
        files_to_upload(folder)


def test_the_allowlist_holds_exact_names_only() -> None:
    names = [*UPLOAD_ALLOWLIST, *hub_utils.COMPANION_FILES]
    assert not [name for name in names if any(char in name for char in "*?[]")]
    assert hub_utils.PLOT_FILES == PLOT_FILES  # the card's plots, by the names the card code writes


# ------------------------------------------------------------------------------------------ remote code
def _independent_remote_code() -> set[str]:
    """The files of the registered Auto classes, and what transformers' own (regex-based) import walk reaches."""
    classes = (MMoEConfig, I2MoEConfig, MMoEForSequenceClassification, I2MoEForSequenceClassification)
    entry_points = {Path(inspect.getfile(cls)) for cls in classes}
    files = {path.name for path in entry_points}
    for path in entry_points:
        files |= {Path(name).name for name in get_relative_import_files(str(path))}
    return files


def test_remote_code_is_derived_from_the_imports() -> None:
    derived = set(hub_utils.package_remote_code_files())
    assert {"modeling_i2moe.py", "fused_lora.py", "modeling_mmoe.py", "configuration_mmoe.py"} <= derived
    assert derived == _independent_remote_code()
    assert "hub_utils.py" not in derived and "testing.py" not in derived
    assert derived <= set(UPLOAD_ALLOWLIST)


def test_a_new_relative_import_travels(tmp_path: Path) -> None:
    """``from . import x`` and imports inside functions count; a module nobody imports does not."""
    (tmp_path / "configuration_mmoe.py").write_text("def f():\n    from . import helpers\n")
    (tmp_path / "modeling_mmoe.py").write_text("from .configuration_mmoe import X\ntry:\n    from .extra.sub import Y\n"
                                               "except ImportError:\n    pass\n")
    (tmp_path / "helpers.py").write_text("from .deep import Z\n")
    (tmp_path / "deep.py").write_text("Z = 1\n")
    (tmp_path / "extra.py").write_text("Y = 2\n")
    (tmp_path / "unused.py").write_text("U = 3\n")
    (tmp_path / "config.json").write_text("{}")
    assert hub_utils.remote_code_files(tmp_path) == [
        "configuration_mmoe.py", "deep.py", "extra.py", "helpers.py", "modeling_mmoe.py"
    ]


def _i2moe() -> I2MoEForSequenceClassification:
    torch.manual_seed(0)
    config = I2MoEConfig(backbone_config=tiny_backbone_config(), num_labels=2, modalities=["caption", "text"])
    return I2MoEForSequenceClassification(config)


@pytest.mark.parametrize("kind", ["mmoe", "i2moe"])
def test_every_file_save_pretrained_writes_is_uploaded(kind: str, saved_model: Path, tmp_path: Path) -> None:
    if kind == "i2moe":
        _i2moe().save_pretrained(tmp_path)
        folder = tmp_path
    else:
        folder = saved_model
    written = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert files_to_upload(folder) == written
    if kind == "i2moe":
        assert {"modeling_i2moe.py", "fused_lora.py"} <= set(written)


_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["mmoe"] = None  # the remote code must stand alone
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True)
    total = sum(p.double().sum().item() for p in model.state_dict().values())
    print(type(model).__module__, repr(total))
    """
)


def test_the_uploaded_files_alone_load_as_remote_code(tmp_path: Path) -> None:
    """An I2MoE folder reduced to exactly the uploaded files loads offline with ``trust_remote_code`` and without
    ``mmoe`` installed: no remote-code module is missing from the upload."""
    model = _i2moe()
    model.save_pretrained(tmp_path / "saved")
    (tmp_path / "saved" / "notes.txt").write_text("local only")
    upload = tmp_path / "upload"
    upload.mkdir()
    for name in files_to_upload(tmp_path / "saved"):
        shutil.copy2(tmp_path / "saved" / name, upload / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run([sys.executable, "-c", _LOAD, str(upload)], cwd=workdir, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    module, total = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert module.startswith("transformers_modules.") and module.endswith("modeling_i2moe")
    expected = sum(p.double().sum().item() for p in model.state_dict().values())
    assert float(total) == pytest.approx(expected, rel=1e-9, abs=1e-6)
