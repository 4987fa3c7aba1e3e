"""MMoEForSequenceClassification on tiny BERT and Qwen2 backbones: shapes, fusion, training targets, saving."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig

from mmoe import MMoEConfig, MMoEForSequenceClassification
from mmoe.fusion import fuse
from mmoe.testing import randomize_lora_weights, tiny_backbone_config, tiny_tokenizer

TEXTS = ["what a warm sunny day", "snow again", "loving this spring weather so much"]


def _batch(family: str) -> dict[str, torch.Tensor]:
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "right" if family == "bert" else "left"
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))



@pytest.fixture(params=["bert", "qwen2"])
def family_model(request, tiny_backbone_dirs) -> tuple[str, MMoEForSequenceClassification]:
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(tiny_backbone_dirs[request.param]), num_labels=3)
    randomize_lora_weights(model)
    return request.param, model.eval()


def test_output_shapes_and_router_rows(family_model):
    family, model = family_model
    out = model(**_batch(family), labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 3)
    assert out.expert_logits.shape == (3, 3, 3)
    assert out.router_weights.shape == (3, 3)
    torch.testing.assert_close(out.router_weights.sum(-1), torch.ones(3))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # Experts really differ once their adapters do.
    assert not torch.allclose(out.expert_logits[:, 0], out.expert_logits[:, 1])


def test_fused_output_follows_router_formula(family_model):
    family, model = family_model
    out = model(**_batch(family), labels=torch.tensor([0, 1, 2]))
    expected = (out.router_weights.unsqueeze(-1) * out.expert_logits.softmax(-1)).sum(1)
    torch.testing.assert_close(out.logits.exp(), expected)
    # The documented loss: NLL of the fused probabilities.
    torch.testing.assert_close(out.loss, -expected[torch.arange(3), torch.tensor([0, 1, 2])].log().mean())


def test_mixed_adapter_batch_equals_sequential_passes(family_model):
    family, model = family_model
    batch = _batch(family)
    model.config.batched_experts = True
    batched = model(**batch)
    model.config.batched_experts = False
    sequential = model(**batch)
    torch.testing.assert_close(batched.expert_logits, sequential.expert_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.router_weights, sequential.router_weights, atol=1e-5, rtol=1e-5)


def test_pooling_matches_backbone_token(family_model):
    """Encoders pool the first token, decoders the last real token (left or right padding)."""
    family, model = family_model
    batch = _batch(family)
    model.train_expert("synergy")
    out = model(**batch)  # activates the synergy adapter
    hidden = model.mmoe.backbone.get_base_model()(**batch).last_hidden_state
    if family == "bert":
        expected = hidden[:, 0]
    else:
        expected = hidden[:, -1]  # left padding puts the last real token at the end
    raw = model.expert_heads["synergy"](expected)
    torch.testing.assert_close(out.expert_logits[:, 0], raw)
    torch.testing.assert_close(out.logits, raw.log_softmax(-1))  # logits are log class probabilities in every mode


@pytest.mark.parametrize("method", ["average", "max", "prior", "oracle"])
def test_forward_fusion_rules_match_fuse(family_model, method):
    family, model = family_model
    gold = torch.tensor([2, 0, 1])
    prior = torch.tensor([0.5, 0.3, 0.2])
    out = model(**_batch(family), fusion=method, interaction_labels=gold, fusion_weights=prior)
    probs = out.expert_logits.softmax(-1)
    expected = {
        "average": probs.mean(1),
        "max": out.expert_logits.max(1).values.softmax(-1),
        "prior": (prior.view(1, 3, 1) * probs).sum(1),
        "oracle": probs[torch.arange(3), gold],
    }[method]
    torch.testing.assert_close(out.logits.exp(), expected)


def test_fuse_validates_inputs():
    logits = torch.randn(4, 3, 2)
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse(logits, "vote")
    with pytest.raises(ValueError, match="needs `weights`"):
        fuse(logits, "oracle")
    with pytest.raises(ValueError, match="shape"):
        fuse(logits, "router", torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fuse(logits, "oracle", torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(fuse(logits, "router", torch.ones(4, 3)).sum(-1), torch.ones(4))


def test_training_one_expert_changes_only_that_expert(family_model):
    family, model = family_model
    model.train().train_expert("uniqueness")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.expert_parameter_names("uniqueness"))
    assert any("lora_A.uniqueness" in n for n in trainable) and any("expert_heads.uniqueness" in n for n in trainable)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(**_batch(family), labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 3) and out.expert_logits.shape == (3, 1, 3) and out.router_weights is None
    out.loss.backward()
    optimizer.step()

    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert any("expert_heads.uniqueness" in n for n in changed)
    for name, param in model.named_parameters():
        if name not in trainable:
            assert torch.equal(param, before[name]), name


def test_training_router_only_sets_trainability(family_model):
    """train_router freezes all but the router (its head and its own adapter); forward still predicts with the mixture
    (logits [B, C]) and its loss (router_objective="mixture", the default) reaches only the router."""
    family, model = family_model
    model.train_router()
    out = model(**_batch(family), labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3) and out.expert_logits.shape == (3, 3, 3)
    out.loss.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None}
    assert grads == set(model.router_parameter_names())
    model.zero_grad(set_to_none=True)
    model.train_mixture()


def test_expert_state_round_trip_between_models(tiny_bert_dir):
    baseline = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, experts=["baseline"])
    randomize_lora_weights(baseline, seed=3)
    mixture = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2)
    state = baseline.expert_state_dict("baseline")
    for expert in mixture.experts:
        mixture.load_expert_state_dict(state, expert)
    reloaded = mixture.expert_state_dict("synergy")
    assert reloaded.keys() == state.keys()
    for key in state:
        assert torch.equal(reloaded[key], state[key])
    with pytest.raises(ValueError, match="Unknown expert"):
        mixture.load_expert_state_dict(state, "humour")


def test_save_and_reload_without_mmoe_installed(tmp_path, tiny_qwen2_dir):
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(tiny_qwen2_dir), num_labels=2).eval()
    randomize_lora_weights(model)
    batch = _batch("qwen2")
    expected = model(**batch)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_mmoe.MMoEForSequenceClassification"
    assert config["auto_map"]["AutoModel"] == "modeling_mmoe.MMoEModel"
    assert {"modeling_mmoe.py", "configuration_mmoe.py", "fusion.py"} <= {p.name for p in folder.iterdir()}
    torch.save({k: v for k, v in batch.items()}, tmp_path / "batch.pt")

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["mmoe"] = None  # make `import mmoe` fail: only the remote code may be used
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig
        folder = {str(folder)!r}
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__name__ == "MMoEConfig", type(config)
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert "mmoe" not in type(model).__module__.split(".")[0], type(model).__module__
        base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(base).__name__ == "MMoEModel", type(base)
        with torch.no_grad():
            o, states = model(**batch), base(**batch)
        torch.save((o.logits, o.expert_logits, o.router_weights, states.expert_hidden_states, states.pooled_output),
                   {str(tmp_path / "out.pt")!r})
        """
    )
    env_cwd = tmp_path  # not the repo root, so the source tree is not importable either
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=env_cwd, capture_output=True, text=True,
        env={**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logits, expert_logits, router_weights, expert_states, pooled = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(logits, expected.logits)
    torch.testing.assert_close(expert_logits, expected.expert_logits)
    torch.testing.assert_close(router_weights, expected.router_weights)
    with torch.no_grad():
        states = model.mmoe(**batch)
    torch.testing.assert_close(expert_states, states.expert_hidden_states)
    torch.testing.assert_close(pooled, states.pooled_output)


def test_auto_classes_load_locally_without_remote_code(tmp_path, tiny_bert_dir):
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, MMoEForSequenceClassification)
    batch = _batch("bert")
    torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
    assert AutoConfig.from_pretrained(tmp_path).backbone_config.model_type == "bert"


def test_config_round_trip_keeps_mmoe_fields():
    config = MMoEConfig(
        backbone_config=tiny_backbone_config("bert").to_dict(), experts=["a", "b"], lora_r=4, fusion="average",
        id2label={0: "no", 1: "yes"}, backbone_name_or_path="some/backbone",
    )
    again = MMoEConfig.from_dict(config.to_dict())
    assert again.experts == ["a", "b"] and again.lora_r == 4 and again.fusion == "average"
    assert again.backbone_config.model_type == "bert" and again.num_labels == 2
    assert again.backbone_name_or_path == "some/backbone"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fusion": "vote"}, "unknown fusion method"),
        ({"num_labels": 3, "id2label": {0: "no", 1: "yes"}}, "num_labels"),
        ({"fusion": "prior"}, "prior_weights"),
        ({"experts": ["a", "a"]}, "unique"),
        ({"experts": ["router"]}, "reserved"),
        ({"prior_weights": [1.0]}, "one weight per expert"),
        ({"pooling": "cls"}, "unknown pooling"),
    ],
)
def test_bad_configuration_raises_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MMoEConfig(backbone_config=tiny_backbone_config("bert"), **kwargs)


def test_dict_backbone_config_needs_model_type():
    with pytest.raises(ValueError, match="model_type"):
        MMoEConfig(backbone_config={"hidden_size": 32})


def test_oracle_without_gold_interactions_raises(family_model):
    family, model = family_model
    with pytest.raises(ValueError, match="interaction_labels"):
        model(**_batch(family), fusion="oracle")


def test_labels_outside_label_set_raise(family_model):
    family, model = family_model
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        model(**_batch(family), labels=torch.tensor([0, 1, 5]))


def test_backbone_without_hidden_size_asks_for_it(tiny_bert_dir):
    class OpaqueConfig(PretrainedConfig):
        """A backbone config that calls its width something non-standard."""

        model_type = "opaque"

    backbone = AutoModel.from_pretrained(tiny_bert_dir)
    config = OpaqueConfig(width=32)
    with pytest.raises(ValueError, match="backbone_hidden_size"):
        MMoEForSequenceClassification(
            MMoEConfig(backbone_config=config, num_labels=2, lora_target_modules=["query"]), backbone=backbone
        )
    model = MMoEForSequenceClassification(
        MMoEConfig(backbone_config=config, num_labels=2, backbone_hidden_size=32, lora_target_modules=["query"]),
        backbone=backbone,
    )
    assert model.eval()(**_batch("bert")).logits.shape == (3, 2)


def test_unknown_lora_targets_raise_clear_error(tiny_bert_dir):
    with pytest.raises(ValueError, match="lora_target_modules"):
        MMoEForSequenceClassification.from_backbone(
            str(tiny_bert_dir), num_labels=2, lora_target_modules=["no_such_layer"]
        )


def test_readme_example_runs(tmp_path: Path, tiny_bert_dir):
    """The README's model example, with the tiny backbone in place of MiniLM."""
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2, fusion="router").eval()
    tokenizer = tiny_tokenizer()
    inputs = tokenizer(["a snowy street. caption: loving this spring"], return_tensors="pt")
    out = model(**inputs)
    assert out.logits.shape == (1, 2) and out.router_weights.shape == (1, 3)
    model.save_pretrained(tmp_path / "mmoe-model")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mmoe-model", trust_remote_code=True)
    torch.testing.assert_close(again.eval()(**inputs).logits, out.logits)


def test_router_features_are_the_routers_input(family_model):
    """The pipeline caches these features to train the router; they must be what forward feeds the router."""
    family, model = family_model
    batch = _batch(family)
    out = model(**batch)
    features = model.router_features(**batch)
    assert features.shape == (3, model.hidden_size)
    torch.testing.assert_close(model.router(features), out.router_logits, atol=1e-5, rtol=1e-5)


def test_backbone_output_that_cannot_be_pooled_raises_clear_error(family_model):
    from types import SimpleNamespace

    from mmoe.backbone_utils import pool_hidden_states

    _, model = family_model
    with pytest.raises(ValueError, match="cannot pool"):
        model.mmoe.last_hidden_state(SimpleNamespace(last_hidden_state=torch.zeros(2, 3)))  # [B, H]: no sequence axis
    with pytest.raises(ValueError, match="changes the sequence length"):
        pool_hidden_states(torch.zeros(2, 5, 4), torch.ones(2, 3), "last")
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])  # odd padding on both sides still finds the last real token
    assert pool_hidden_states(hidden, mask, "last").flatten().tolist() == [2.0, 7.0]
    assert pool_hidden_states(hidden, mask, "mean").flatten().tolist() == [1.5, 5.5]
