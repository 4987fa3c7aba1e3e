"""The router's own LoRA adapter (``router_input="adapter"``): its pass, what trains, saving, and the pipeline stage."""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from test_pipeline import _precomputed_dataset, _tiny_args
from transformers import AutoModel

from mmoe import MMoEConfig, MMoEForSequenceClassification
from mmoe.backbone_utils import pool_hidden_states
from mmoe.configuration_mmoe import ROUTER_ADAPTER
from mmoe.testing import randomize_lora_weights, tiny_tokenizer
from mmoe.training.cli import train

TEXTS = ["a snowy day", "warm sun is nice on the beach", "rain", "what a lovely cold morning"]


def _model(backbone_dir, **config) -> MMoEForSequenceClassification:
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(
        str(backbone_dir), num_labels=2, lora_r=4, router_hidden_size=8, lora_dropout=0.0, classifier_dropout=0.0,
        router_dropout=0.0, router_input="adapter", **config,
    )
    randomize_lora_weights(model, seed=1)  # every adapter differs from the others and from the bare backbone
    return model


def _batch() -> dict[str, torch.Tensor]:
    return dict(tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("mode", ["fused", "peft", "sequential"])
def test_router_pass_is_the_router_adapter_alone(mode, tiny_bert_dir, tmp_path):
    """``pooled_output`` is the backbone with the router's adapter only: checked against that adapter's saved peft
    folder loaded by peft on a fresh backbone, on each of the three execution paths."""
    model = _model(tiny_bert_dir).eval()
    assert model.mmoe.adapter_names == [*model.experts, ROUTER_ADAPTER]
    model.config.fused_experts = mode == "fused"
    model.config.batched_experts = mode != "sequential"
    batch = _batch()
    with torch.no_grad():
        out = model.mmoe(**batch)
    model.mmoe.save_experts(tmp_path)
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert_dir), str(tmp_path / ROUTER_ADAPTER))
    with torch.no_grad():
        expected = pool_hidden_states(peft_model.eval()(**batch).last_hidden_state, batch["attention_mask"], "first")
        bare = pool_hidden_states(
            AutoModel.from_pretrained(tiny_bert_dir).eval()(**batch).last_hidden_state, batch["attention_mask"], "first"
        )
    torch.testing.assert_close(out.pooled_output, expected, rtol=1e-5, atol=1e-5)
    assert (out.pooled_output - bare).abs().max() > 1e-3  # the adapter changes the pass, so the check can fail
    for index in range(len(model.experts)):  # and it is not any expert's pass
        assert (out.pooled_output - out.expert_hidden_states[:, index]).abs().max() > 1e-3


def test_train_router_trains_the_router_and_its_adapter_only(tiny_bert_dir):
    model = _model(tiny_bert_dir).train_router().train()
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    own_adapter = re.compile(rf"\.lora_[AB]\.{ROUTER_ADAPTER}\.weight$")
    expected = {n for n, _ in model.named_parameters() if n.startswith("router.") or own_adapter.search(n)}
    assert trainable == expected and any(own_adapter.search(n) for n in trainable)
    batch = _batch()
    scores = model.router_scores(**batch)
    assert scores.shape == (len(TEXTS), len(model.experts))
    scores.logsumexp(-1).sum().backward()
    touched = {name for name, param in model.named_parameters() if param.grad is not None and param.grad.abs().sum()}
    assert touched == expected  # every router tensor gets a gradient, no expert's
    # the scores are those the mixture's forward uses
    model.eval()
    with torch.no_grad():
        out = model(**batch)
        torch.testing.assert_close(out.router_logits, model.router_scores(**batch))
        torch.testing.assert_close(out.router_weights, out.router_logits.softmax(-1))


def test_router_adapter_round_trips_through_save_pretrained(tiny_bert_dir, tmp_path):
    model = _model(tiny_bert_dir).eval()
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert any(f".{ROUTER_ADAPTER}." in key for key in saved)  # embedded layout: the adapter is in the weights
    again = MMoEForSequenceClassification.from_pretrained(tmp_path).eval()
    assert again.config.router_input == "adapter" and again.mmoe.router_adapter == ROUTER_ADAPTER
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).router_weights, model(**batch).router_weights)
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits)


def test_router_adapter_name_is_reserved_and_unused_by_i2moe(tiny_bert_dir):
    with pytest.raises(ValueError, match="reserved"):
        MMoEConfig(experts=["redundancy", ROUTER_ADAPTER], backbone_config=AutoModel.from_pretrained(
            tiny_bert_dir).config).validate_mmoe()
    from mmoe import I2MoEForSequenceClassification

    # I2MoE has no router: its config refuses the router's options instead of ignoring them
    with pytest.raises(ValueError, match="router_input"):
        I2MoEForSequenceClassification.from_backbone(
            str(tiny_bert_dir), num_labels=2, lora_r=2, modalities=["caption", "text"], router_input="adapter"
        )
    i2moe = I2MoEForSequenceClassification.from_backbone(
        str(tiny_bert_dir), num_labels=2, lora_r=2, modalities=["caption", "text"]
    )
    assert not hasattr(i2moe.mmoe, "router_adapter") and i2moe.mmoe.adapter_names == i2moe.experts
    assert i2moe.mmoe.pooled_adapter is None and not hasattr(i2moe.config, "router_input")


def test_pipeline_trains_the_router_adapter_with_the_experts_frozen(tmp_path, tiny_bert_dir):
    """A run with --router_input experts, then the same folder with --router_input adapter: only the router stage
    reruns; the experts are unchanged, the router's adapter has trained (peft starts lora_B at zero) and the
    saved run reloads with it."""
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, data, out, "--router_input", "experts"))
    first = MMoEForSequenceClassification.from_pretrained(out)
    results = train(_tiny_args(tiny_bert_dir, data, out, "--router_input", "adapter", "--router_num_train_epochs",
                               "2"))
    model = MMoEForSequenceClassification.from_pretrained(out).eval()
    assert model.config.router_input == "adapter"
    weights = dict(model.named_parameters())
    for name, value in first.named_parameters():
        if "lora_" in name or name.startswith("expert_heads."):
            torch.testing.assert_close(weights[name], value)  # the experts stayed frozen
    router_b = [value for name, value in weights.items() if re.search(rf"lora_B\.{ROUTER_ADAPTER}\.", name)]
    assert router_b and all(value.abs().sum() > 0 for value in router_b)
    stage = json.loads((out / "router" / "stage_complete.json").read_text())
    assert stage["summary"]["train_rows"] == 48 and stage["summary"]["selection_metric"] == "macro_f1"
    stored = load_file(str(out / "router" / "router.safetensors"))
    assert set(stored) == set(model.router_parameter_names())
    assert 0.0 <= results["validation"]["mmoe"]["accuracy"] <= 1.0
    card = (out / "README.md").read_text()
    assert "LoRA adapter of its own" in card and "adapter-free" not in card  # the card says what the router reads


def test_router_input_does_not_change_the_baseline_or_the_experts(tmp_path, tiny_bert_dir):
    """The stages before the router do not depend on --router_input (their fingerprints leave it out), so their
    weights must not either: two fresh runs that differ only there train identical baselines and experts."""
    data = _precomputed_dataset(tmp_path / "data")
    for router_input in ("experts", "adapter"):
        train(_tiny_args(tiny_bert_dir, data, tmp_path / router_input, "--router_input", router_input))
    for stage_file in ("baseline/baseline.safetensors", "experts/synergy.safetensors"):
        first, second = (load_file(str(tmp_path / name / stage_file)) for name in ("experts", "adapter"))
        assert first.keys() == second.keys() and first
        for key, value in first.items():
            torch.testing.assert_close(second[key], value, rtol=0, atol=0)


def test_router_adapter_trains_as_the_papers_interaction_classifier(tmp_path, tiny_bert_dir):
    """With --router_objective interaction the adapter and head learn each row's interaction (focal loss), scored
    by macro-F1 over the 3 interactions."""
    data = _precomputed_dataset(tmp_path / "data")
    out = tmp_path / "out"
    train(_tiny_args(tiny_bert_dir, data, out, "--router_input", "adapter", "--router_objective", "interaction"))
    stage = json.loads((out / "router" / "stage_complete.json").read_text())["summary"]
    assert stage["selection_metric"] == "macro_f1" and 1 <= stage["validation"]["predicted_classes"] <= 3
    model = MMoEForSequenceClassification.from_pretrained(out)
    stored = load_file(str(out / "router" / "router.safetensors"))
    assert set(stored) == set(model.router_parameter_names()) and any(ROUTER_ADAPTER in key for key in stored)
    card = (out / "README.md").read_text()
    assert "interaction classifier on the pooled representation of a LoRA adapter of its own" in card
