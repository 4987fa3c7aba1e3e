"""MMoE shaped like transformers and PEFT: MMoEModel as the base model, return_dict, embeddings, and saving the experts
as peft adapters with the backbone referenced by its Hub id (or embedded when it has none)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification

from mmoe import MMoEConfig, MMoEForSequenceClassification, MMoEModel, MMoEModelOutput
from mmoe.backbone_utils import pool_hidden_states
from mmoe.configuration_mmoe import is_hub_id
from mmoe.testing import randomize_lora_weights, save_tiny_backbone, tiny_backbone_config, tiny_tokenizer

TEXTS = ["what a warm sunny day", "snow again", "loving this spring weather so much"]
BACKBONE_ID = "hf-internal-testing/tiny-mmoe-backbone"
MMOE_ID = "hf-internal-testing/tiny-mmoe"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _batch(family: str = "bert") -> dict[str, torch.Tensor]:
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "right" if family == "bert" else "left"
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def _model(backbone_dir: Path, **kwargs) -> MMoEForSequenceClassification:
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(backbone_dir), num_labels=3, **kwargs)
    randomize_lora_weights(model, seed=5)
    return model.eval()


def _put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Copy ``folder`` into ``cache`` as the ``main`` snapshot of ``repo_id`` (huggingface_hub's cache layout)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network here: like HF_HUB_OFFLINE=1, so that Hub look-ups go to the local cache at once."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A local Hub cache holding a tiny BERT backbone under a Hub id."""
    cache = tmp_path_factory.mktemp("hub")
    _put_in_hub_cache(cache, BACKBONE_ID, save_tiny_backbone(tmp_path_factory.mktemp("backbone-src"), "bert", seed=7))
    return cache


@pytest.fixture(scope="module")
def referenced(hub_cache, tmp_path_factory) -> tuple[MMoEForSequenceClassification, Path]:
    """A model whose backbone is the Hub id above, saved in the (automatic) referenced layout."""
    backbone_dir = hub_cache / ("models--" + BACKBONE_ID.replace("/", "--")) / "snapshots" / COMMIT
    model = _model(backbone_dir, lora_r=2, lora_alpha=4, router_hidden_size=8)  # far smaller than even a tiny backbone
    model.config.backbone_name_or_path = BACKBONE_ID
    folder = tmp_path_factory.mktemp("referenced")
    model.save_pretrained(folder)
    return model, folder


# ---------------------------------------------------------------------------------------------- transformers' shape
def test_automodel_gives_the_base_model(tiny_bert_dir, tmp_path):
    model = _model(tiny_bert_dir)
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is MMoEModel and base.base_model is base
    out = base(**_batch())
    assert isinstance(out, MMoEModelOutput)
    assert out.expert_hidden_states.shape == (3, 3, 32) and out.pooled_output.shape == (3, 32)
    with torch.no_grad():
        expected = model.mmoe(**_batch())
    torch.testing.assert_close(out.expert_hidden_states, expected.expert_hidden_states)
    torch.testing.assert_close(out.pooled_output, expected.pooled_output)
    assert model.base_model is model.mmoe and model.base_model_prefix == "mmoe"
    assert all(key.startswith(("mmoe.backbone.", "expert_heads.", "router.")) for key in model.state_dict())
    # The router's input is the base model's adapter-free pooled state.
    torch.testing.assert_close(model.router_features(**_batch()), expected.pooled_output)


def test_return_dict_false_gives_tuples(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    batch = _batch()
    out = model(**batch, labels=torch.tensor([0, 1, 2]))
    as_tuple = model(**batch, labels=torch.tensor([0, 1, 2]), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(out.to_tuple())
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    no_labels = model(**batch, return_dict=False)
    torch.testing.assert_close(no_labels[0], out.logits)
    states = model.mmoe(**batch)
    model.config.return_dict = False
    try:
        torch.testing.assert_close(model(**batch)[0], out.logits)
        as_tuple = model.mmoe(**batch)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], states.expert_hidden_states)
        torch.testing.assert_close(as_tuple[1], states.pooled_output)
    finally:
        model.config.return_dict = True


def test_input_embeddings_are_the_backbones_and_resize(tiny_qwen2_dir):
    model = _model(tiny_qwen2_dir)
    inner = model.mmoe.backbone.get_base_model()
    assert model.get_input_embeddings() is inner.get_input_embeddings() is model.mmoe.get_input_embeddings()
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(old + 8)
    assert model.get_input_embeddings().weight.shape[0] == old + 8
    assert inner.get_input_embeddings().weight.shape[0] == old + 8
    batch = _batch("qwen2")
    batch["input_ids"][:, -1] = old + 7  # a new token
    out = model(**batch)
    assert out.logits.shape == (3, 3) and torch.isfinite(out.logits).all()


def test_logits_stay_b_by_c_after_train_router(tiny_bert_dir):
    model = _model(tiny_bert_dir).train_router()
    out = model(**_batch())
    assert out.logits.shape == (3, 3) and out.expert_logits.shape == (3, 3, 3)
    torch.testing.assert_close(out.router_weights.sum(-1), torch.ones(3))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.router_parameter_names())  # router.* and the router's own adapter (the default)
    assert any(name.startswith("router.") for name in trainable) and any("router_adapter" in n for n in trainable)
    model.train_expert("synergy")
    out = model(**_batch())
    assert out.logits.shape == (3, 3) and out.expert_logits.shape == (3, 1, 3)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(3))  # log class probabilities in every mode


def test_attention_flags_are_the_backbones(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    inner = model.mmoe.backbone.get_base_model()
    for flag in ("_supports_sdpa", "_supports_flash_attn", "_supports_flex_attn", "_supports_attention_backend"):
        assert getattr(model, flag) == getattr(model.mmoe, flag) == getattr(inner, flag, False), flag


# ---------------------------------------------------------------------------------------------- saving like PEFT
def test_automatic_layout_choice(tiny_bert_dir):
    assert is_hub_id("Qwen/Qwen2-0.5B") and is_hub_id("bert-base-uncased")
    assert not is_hub_id(str(tiny_bert_dir)) and not is_hub_id(None) and not is_hub_id("./a/b") and not is_hub_id("")
    config = MMoEConfig(backbone_config=tiny_backbone_config("bert"), num_labels=2)
    assert config.embeds_backbone()  # no name at all
    config.backbone_name_or_path = "Qwen/Qwen2-0.5B"
    assert not config.embeds_backbone()
    config.save_backbone = True
    assert config.embeds_backbone()
    config.backbone_name_or_path, config.save_backbone = str(tiny_bert_dir), None
    assert config.embeds_backbone()


def test_referenced_layout_is_adapter_sized(referenced, hub_cache):
    model, folder = referenced
    assert model.config.backbone_name_or_path == BACKBONE_ID
    assert json.loads((folder / "config.json").read_text())["save_backbone"] is False
    assert model.config.save_backbone is None  # saving records the layout in the file, not in the model
    weights = load_file(str(folder / "model.safetensors"))
    assert set(weights) == {k for k in model.state_dict() if k.startswith(("expert_heads.", "router."))}
    for expert in model.experts:
        assert {p.name for p in (folder / expert).iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    backbone_bytes = _folder_bytes(hub_cache)
    adapter_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)
    assert _folder_bytes(folder) < backbone_bytes / 4
    # the adapters, heads and router, plus the safetensors headers: nothing else
    assert _folder_bytes(folder) < adapter_bytes + sum(v.numel() * 4 for v in weights.values()) + 4 * 4096


def test_referenced_layout_reloads_in_process_from_the_hub_cache(referenced, hub_cache):
    model, folder = referenced
    again, info = MMoEForSequenceClassification.from_pretrained(
        folder, cache_dir=str(hub_cache), local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"], info["missing_keys"]
    batch = _batch()
    torch.testing.assert_close(again.eval()(**batch).logits, model(**batch).logits)
    bf16 = MMoEForSequenceClassification.from_pretrained(
        folder, cache_dir=str(hub_cache), local_files_only=True, dtype=torch.bfloat16, attn_implementation="eager"
    ).eval()
    assert bf16.get_input_embeddings().weight.dtype == torch.bfloat16
    assert bf16.mmoe.backbone.get_base_model().config._attn_implementation == "eager"
    torch.testing.assert_close(bf16(**batch).logits.exp(), model(**batch).logits.exp(), atol=0.05, rtol=0)


def test_referenced_layout_saves_and_publishes_the_router_adapter(hub_cache, tmp_path):
    """With router_input="adapter", the router's LoRA adapter is a peft folder like the experts': saved, listed
    for upload, and loaded back, so the reloaded mixture routes exactly as the saved one."""
    from mmoe.configuration_mmoe import ROUTER_ADAPTER
    from mmoe.hub_cards.publish import expert_adapter_files

    backbone_dir = hub_cache / ("models--" + BACKBONE_ID.replace("/", "--")) / "snapshots" / COMMIT
    model = _model(backbone_dir, lora_r=2, lora_alpha=4, router_hidden_size=8, router_input="adapter")
    model.config.backbone_name_or_path = BACKBONE_ID
    model.save_pretrained(tmp_path)
    assert {p.name for p in (tmp_path / ROUTER_ADAPTER).iterdir()} == {"adapter_config.json",
                                                                      "adapter_model.safetensors"}
    assert not any(ROUTER_ADAPTER in key for key in load_file(str(tmp_path / "model.safetensors")))
    listed = expert_adapter_files(tmp_path)
    assert f"{ROUTER_ADAPTER}/adapter_model.safetensors" in listed and len(listed) == 2 * (len(model.experts) + 1)
    again = MMoEForSequenceClassification.from_pretrained(tmp_path, cache_dir=str(hub_cache), local_files_only=True)
    batch = _batch()
    with torch.no_grad():
        out, expected = again.eval()(**batch), model(**batch)
    torch.testing.assert_close(out.router_weights, expected.router_weights)
    torch.testing.assert_close(out.logits, expected.logits)


def test_expert_folders_load_with_peft(referenced, hub_cache):
    """Each expert folder is a plain peft adapter: on a fresh backbone it gives the mixture's expert states."""
    model, folder = referenced
    batch = _batch()
    with torch.no_grad():
        states = model.mmoe(**batch).expert_hidden_states
    for index, expert in enumerate(model.experts):
        backbone = AutoModel.from_pretrained(BACKBONE_ID, cache_dir=str(hub_cache), local_files_only=True)
        peft_model = PeftModel.from_pretrained(backbone, str(folder / expert)).eval()
        with torch.no_grad():
            hidden = peft_model(**batch).last_hidden_state
        pooled = pool_hidden_states(hidden, batch["attention_mask"], "first")
        torch.testing.assert_close(pooled, states[:, index])
        assert json.loads((folder / expert / "adapter_config.json").read_text())["base_model_name_or_path"] == (
            BACKBONE_ID
        )


_LOAD_WITHOUT_MMOE = textwrap.dedent(
    """
    import sys
    sys.modules["mmoe"] = None  # `import mmoe` now raises ImportError: the remote code must stand alone
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    name, batch_file, out_file = sys.argv[1:4]
    batch = torch.load(batch_file)
    model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(name, trust_remote_code=True).eval()
    assert type(base).__name__ == "MMoEModel" and type(base).__module__.startswith("transformers_modules."), type(base)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        torch.save((model(**batch).logits, base(**batch).expert_hidden_states), out_file)
    """
)


def _load_offline_without_mmoe(name: str, cache: Path, tmp_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    torch.save(_batch(), tmp_path / "batch.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf_home"),
               HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_MMOE, name, str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")],
        cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(tmp_path / "out.pt")


def test_referenced_layout_reloads_offline_without_mmoe(referenced, hub_cache, tmp_path):
    model, folder = referenced
    cache = tmp_path / "hub"
    shutil.copytree(hub_cache, cache)
    _put_in_hub_cache(cache, MMOE_ID, folder)  # the MMoE repo itself, experts in subfolders, from the Hub cache
    logits, states = _load_offline_without_mmoe(MMOE_ID, cache, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(**_batch()).logits)
        torch.testing.assert_close(states, model.mmoe(**_batch()).expert_hidden_states)


def test_embedded_layout_reloads_offline_without_mmoe(tiny_bert_dir, tmp_path):
    model = _model(tiny_bert_dir)  # a local folder: no Hub id, so the backbone is embedded
    assert model.config.backbone_name_or_path == str(tiny_bert_dir)
    folder = tmp_path / "embedded"
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["save_backbone"] is True
    assert set(load_file(str(folder / "model.safetensors"))) == set(model.state_dict())
    assert not any((folder / expert).exists() for expert in model.experts)  # one self-contained checkpoint
    moved = tmp_path / "backbone-gone"
    shutil.move(str(tiny_bert_dir), moved)  # the embedded folder must not need the backbone's folder
    try:
        logits, states = _load_offline_without_mmoe(str(folder), tmp_path / "empty-hub", tmp_path)
    finally:
        shutil.move(str(moved), str(tiny_bert_dir))
    with torch.no_grad():
        torch.testing.assert_close(logits, model(**_batch()).logits)
        torch.testing.assert_close(states, model.mmoe(**_batch()).expert_hidden_states)


def test_save_backbone_true_embeds_a_hub_backbone(referenced, hub_cache, tmp_path):
    model, _ = referenced
    model.config.save_backbone = True
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.config.save_backbone = None
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(model.state_dict())
    again = MMoEForSequenceClassification.from_pretrained(tmp_path).eval()  # no Hub cache needed
    torch.testing.assert_close(again(**_batch()).logits, model(**_batch()).logits)


class _Records(logging.Handler):
    """Collects the records of transformers' loggers (they do not propagate to the root logger, so caplog misses
    them)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Records:
        logging.getLogger("transformers").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("transformers").removeHandler(self)


def test_referenced_layout_load_report_names_no_loaded_weight(referenced, hub_cache, tmp_path):
    """The backbone and LoRA weights of a referenced checkpoint are loaded after transformers' own loading: its load
    report must not call them "MISSING ... newly initialized". A weight that is really missing still is reported."""
    model, folder = referenced
    with _Records() as records:
        again = MMoEForSequenceClassification.from_pretrained(folder, cache_dir=str(hub_cache), local_files_only=True)
        base = AutoModel.from_pretrained(folder, cache_dir=str(hub_cache), local_files_only=True)
    report = "\n".join(records.messages)
    assert "MISSING" not in report and "backbone." not in report, report
    assert isinstance(base, MMoEModel)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(**_batch()).logits, model(**_batch()).logits)

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("router.")}, str(broken / "model.safetensors"),
              metadata={"format": "pt"})
    with _Records() as records:
        MMoEForSequenceClassification.from_pretrained(broken, cache_dir=str(hub_cache), local_files_only=True)
    report = "\n".join(records.messages)
    assert "router.net" in report and "backbone." not in report, report


def test_num_labels_alone_reheads_a_checkpoint(tiny_bert_dir, tmp_path):
    """As in transformers' own configs: ``num_labels`` given alone regenerates ``id2label``, and with
    ``ignore_mismatched_sizes`` the heads are new, finite and of the new size; contradicting labels are refused."""
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, lora_r=2,
                                                        id2label={0: "no", 1: "yes"})
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, trust_remote_code=True, num_labels=3, ignore_mismatched_sizes=True
    ).eval()
    assert again.config.num_labels == 3 and again.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    for head in again.expert_heads.values():
        assert head.out_proj.weight.shape == (3, 32) and torch.isfinite(head.out_proj.weight).all()
    out = again(**_batch())
    assert out.logits.shape == (3, 3) and torch.isfinite(out.logits).all()
    same = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True, num_labels=2)
    assert same.config.id2label == {0: "no", 1: "yes"}  # the same number keeps the names
    with pytest.raises(ValueError, match="num_labels"):
        AutoModelForSequenceClassification.from_pretrained(
            tmp_path, trust_remote_code=True, num_labels=3, id2label={0: "no", 1: "yes"}
        )
    with pytest.raises(ValueError, match="num_labels"):
        MMoEConfig(backbone_config=tiny_backbone_config("bert"), num_labels=3, id2label={0: "no", 1: "yes"})


def test_missing_expert_folder_in_referenced_layout_raises_clear_error(referenced, hub_cache, tmp_path):
    _, folder = referenced
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "synergy")
    with pytest.raises(OSError, match="synergy"):
        MMoEForSequenceClassification.from_pretrained(broken, cache_dir=str(hub_cache), local_files_only=True)


def test_expert_state_dict_is_peft_format(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    state = model.expert_state_dict("synergy")
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    adapter = {k: v for k, v in state.items() if not k.startswith("head.")}
    assert adapter and all(k.startswith("base_model.model.") and "synergy" not in k for k in adapter)
    assert {k for k in state if k.startswith("head.")} == {"head.out_proj.weight", "head.out_proj.bias"}
    with pytest.raises(ValueError, match="do not fit"):
        model.load_expert_state_dict({**state, "base_model.model.extra.lora_A.weight": torch.zeros(1)}, "synergy")


def test_push_to_hub_sends_the_expert_folders(referenced, captured_hub):
    model, _ = referenced
    model.push_to_hub("someone/tiny-mmoe", token="hf_dummy")
    (commit,) = captured_hub["create_commit"]
    paths = {op.path_in_repo for op in commit["operations"]}
    assert {"config.json", "model.safetensors", "modeling_mmoe.py"} <= paths
    names = ("adapter_config.json", "adapter_model.safetensors")
    assert {f"{expert}/{name}" for expert in model.experts for name in names} <= paths
