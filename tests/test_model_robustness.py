"""MMoEForSequenceClassification as a transformers model: weight initialisation on load, label checks, attention
implementation and dtype, float32 heads next to a bf16 backbone, gradient checkpointing."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification

from mmoe import MMoEConfig, MMoEForSequenceClassification
from mmoe.testing import randomize_lora_weights, tiny_backbone_config, tiny_tokenizer

TEXTS = ["what a warm sunny day", "snow again", "loving this spring weather so much", "the cat is happy"]
HIDDEN = 32  # width of the tiny backbones (mmoe.testing)


def _batch(family: str) -> dict[str, torch.Tensor]:
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "right" if family == "bert" else "left"
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def _save(model: MMoEForSequenceClassification, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved_bert(tmp_path_factory, tiny_bert_dir) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 2-label MMoE over tiny BERT with non-trivial LoRA weights, saved; returns the folder and its tensors."""
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2)
    randomize_lora_weights(model, seed=1)
    folder = _save(model, tmp_path_factory.mktemp("mmoe-bert"))
    return folder, load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_backbone_dirs) -> dict[str, Path]:
    folders = {}
    for family, backbone_dir in tiny_backbone_dirs.items():
        torch.manual_seed(0)
        model = MMoEForSequenceClassification.from_backbone(str(backbone_dir), num_labels=3)
        randomize_lora_weights(model, seed=2)
        folders[family] = _save(model, tmp_path_factory.mktemp(f"mmoe-{family}"))
    return folders


def _assert_initialised_linear(weight: torch.Tensor, bias: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert tuple(weight.shape) == shape
    assert torch.isfinite(weight).all() and weight.abs().max() < 1
    assert 0.012 < weight.float().std().item() < 0.028, weight.std()  # normal(0, 0.02)
    assert torch.equal(bias, torch.zeros_like(bias))


def _assert_same_tensors(model: torch.nn.Module, saved: dict[str, torch.Tensor], keys: set[str]) -> None:
    state = model.state_dict()
    assert keys, "nothing to compare"
    for key in keys:
        assert torch.equal(state[key], saved[key]), key


# ---------------------------------------------------------------------------------------------- 1. initialisation
def test_reload_with_more_labels_initialises_the_new_heads(saved_bert):
    folder, saved = saved_bert
    torch.manual_seed(0)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert isinstance(model, MMoEForSequenceClassification)
    assert {key for key, *_ in info["mismatched_keys"]} == {k for k in saved if k.startswith("expert_heads.")}
    for name in model.experts:
        head = model.expert_heads[name].out_proj
        _assert_initialised_linear(head.weight, head.bias, (3, HIDDEN))
    # Backbone, LoRA adapters and router are the saved tensors, untouched by the re-initialisation.
    kept = {k for k in saved if not k.startswith("expert_heads.")}
    assert any("lora_B" in k for k in kept) and any(k.startswith("router.") for k in kept)
    _assert_same_tensors(model, saved, kept)
    out = model.eval()(**_batch("bert"))
    assert out.logits.shape == (4, 3) and torch.isfinite(out.logits).all()


def _checkpoint_without_router(folder, saved, partial):
    """A copy of the saved model whose weights file lacks every router tensor."""
    MMoEForSequenceClassification.from_pretrained(folder).save_pretrained(partial)
    save_file({k: v for k, v in saved.items() if not k.startswith("router.")}, str(partial / "model.safetensors"),
              metadata={"format": "pt"})
    return partial


def test_checkpoint_without_router_gets_a_fresh_router(saved_bert, tmp_path):
    folder, saved = saved_bert
    partial = _checkpoint_without_router(folder, saved, tmp_path / "no-router")
    torch.manual_seed(0)
    model, info = MMoEForSequenceClassification.from_pretrained(partial, output_loading_info=True)
    router_keys = {k for k in saved if k.startswith("router.")}
    assert set(info["missing_keys"]) == router_keys
    first, second = model.router.net[1], model.router.net[4]
    _assert_initialised_linear(first.weight, first.bias, (model.config.router_hidden_size, HIDDEN))
    _assert_initialised_linear(second.weight, second.bias, (3, model.config.router_hidden_size))
    _assert_same_tensors(model, saved, set(saved) - router_keys)
    out = model.eval()(**_batch("bert"))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.router_weights).all()
    torch.testing.assert_close(out.router_weights.sum(-1), torch.ones(4))


def test_checkpoint_without_one_expert_adapter_gets_peft_init(saved_bert, tmp_path, tiny_bert_dir):
    """Missing LoRA weights are initialised as peft does (lora_B = 0: the expert computes the bare backbone)."""
    folder, saved = saved_bert
    partial = tmp_path / "no-synergy-lora"
    MMoEForSequenceClassification.from_pretrained(folder).save_pretrained(partial)
    dropped = {k for k in saved if ".lora_A.synergy." in k or ".lora_B.synergy." in k}
    save_file({k: v for k, v in saved.items() if k not in dropped}, str(partial / "model.safetensors"),
              metadata={"format": "pt"})
    model = MMoEForSequenceClassification.from_pretrained(partial).eval()
    state = model.state_dict()
    for key in dropped:
        if ".lora_B." in key:
            assert torch.equal(state[key], torch.zeros_like(state[key])), key
        else:  # kaiming_uniform(a=sqrt(5)): |w| <= 1 / sqrt(fan_in), not all zero
            bound = 1 / math.sqrt(state[key].shape[1])
            assert state[key].abs().max() <= bound + 1e-6 and state[key].abs().max() > bound / 4, key
    _assert_same_tensors(model, saved, set(saved) - dropped)
    batch = _batch("bert")
    out = model(**batch)
    with torch.no_grad():  # the backbone alone, as saved by save_tiny_backbone
        bare = AutoModel.from_pretrained(tiny_bert_dir)(**batch).last_hidden_state[:, 0]
    synergy = model.experts.index("synergy")
    torch.testing.assert_close(out.expert_logits[:, synergy], model.expert_heads["synergy"](bare))


def test_fresh_model_keeps_backbone_and_zero_lora_and_initialises_heads(tiny_bert_dir):
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.equal(p, torch.zeros_like(p)) for p in lora_b)
    for name in model.experts:
        head = model.expert_heads[name].out_proj
        _assert_initialised_linear(head.weight, head.bias, (2, HIDDEN))
    backbone = AutoModel.from_pretrained(tiny_bert_dir)
    mine = model.mmoe.backbone.get_base_model().state_dict()
    for key, value in backbone.state_dict().items():  # same names: the LoRA wrapper keeps `base_layer`
        assert torch.equal(mine.get(key, mine.get(key.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias"))), value), key
    # Calling _init_weights directly never touches LoRA, and hands backbone-side modules to the backbone's init.
    lora_module = model.mmoe.backbone.get_base_model().encoder.layer[0].attention.self.query.lora_B["synergy"]
    model._init_weights(lora_module)
    assert torch.equal(lora_module.weight, torch.zeros_like(lora_module.weight))
    new_embeddings = torch.nn.Embedding(10, HIDDEN, padding_idx=0)
    torch.nn.init.constant_(new_embeddings.weight, 5.0)
    model._init_weights(new_embeddings)
    assert new_embeddings.weight.abs().max() < 1 and torch.equal(new_embeddings.weight[0], torch.zeros(HIDDEN))


# ---------------------------------------------------------------------------------------------- 2. bad labels
@pytest.fixture(scope="module")
def bert_model(tiny_bert_dir) -> MMoEForSequenceClassification:
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2)
    randomize_lora_weights(model)
    return model.eval()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": torch.tensor([0, 1, 1])}, r"`labels` must have shape \[B\] = \[4\].*got \[3\]"),
        ({"labels": torch.tensor([0.7, 1.0, 0.0, 1.0])}, r"`labels` must be integer class indices.*float32"),
        ({"labels": torch.tensor([[0], [1], [1], [0]])}, r"`labels` must have shape \[B\] = \[4\]"),
        ({"labels": [0, 1, 1, 0]}, r"`labels` must be a torch.Tensor"),
        ({"fusion": "oracle", "interaction_labels": torch.tensor([0, 1])}, r"`interaction_labels` must have shape"),
        ({"fusion": "oracle", "interaction_labels": torch.tensor([0.0, 1.0, 2.0, 0.0])},
         r"`interaction_labels` must be integer expert indices"),
        ({"interaction_labels": torch.tensor([0, 1, 2, 3])}, r"expert indices in \[0, 3\)"),
    ],
)
def test_bad_labels_raise_clear_errors(bert_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bert_model(**_batch("bert"), **kwargs)


def test_bad_labels_are_refused_in_every_training_target(bert_model):
    try:
        bert_model.train_expert("synergy")
        with pytest.raises(ValueError, match=r"\[B\] = \[4\]"):
            bert_model(**_batch("bert"), labels=torch.tensor([0, 1, 1]))
        bert_model.train_router()
        with pytest.raises(ValueError, match="integer expert indices"):
            bert_model(**_batch("bert"), interaction_labels=torch.tensor([0.0, 1.0, 2.0, 0.0]))
        with pytest.raises(ValueError, match=r"\[B\] = \[4\]"):
            bert_model(**_batch("bert"), interaction_labels=torch.tensor([0, 1, 2]))
    finally:
        bert_model.train_mixture()


def test_good_labels_still_give_the_documented_loss(bert_model):
    labels = torch.tensor([0, 1, 1, 0])
    out = bert_model(**_batch("bert"), labels=labels)
    torch.testing.assert_close(out.loss, -out.logits[torch.arange(4), labels].mean())


@pytest.mark.parametrize("kwargs", [{"num_labels": 1}, {"num_labels": 0}, {"id2label": {0: "only"}}, {"id2label": {}}])
def test_config_refuses_fewer_than_two_labels(kwargs):
    with pytest.raises(ValueError, match="num_labels` must be at least 2"):
        MMoEConfig(backbone_config=tiny_backbone_config("bert"), **kwargs)


def test_loading_with_one_label_is_refused_and_saved_configs_still_load(saved_bert):
    folder, _ = saved_bert
    with pytest.raises(ValueError, match="at least 2"):
        MMoEForSequenceClassification.from_pretrained(folder, num_labels=1, ignore_mismatched_sizes=True)
    config = MMoEConfig.from_pretrained(folder)
    assert config.num_labels == 2
    assert MMoEConfig.from_dict(config.to_dict()).num_labels == 2


# ---------------------------------------------------------------------------------------------- 3. attention, dtype
@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_attn_implementation_reaches_the_backbone(saved_models, family):
    batch = _batch(family)
    logits = {}
    for implementation in ("sdpa", "eager"):
        model = MMoEForSequenceClassification.from_pretrained(
            saved_models[family], attn_implementation=implementation
        ).eval()
        assert model.config.backbone_config._attn_implementation == implementation
        assert model.mmoe.backbone.get_base_model().config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(**batch).logits
    torch.testing.assert_close(logits["sdpa"], logits["eager"], atol=1e-5, rtol=1e-5)
    model.set_attn_implementation("sdpa")  # switching later reaches the backbone too
    assert model.mmoe.backbone.get_base_model().config._attn_implementation == "sdpa"

    model = MMoEForSequenceClassification.from_pretrained(
        saved_models[family], dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    assert model.mmoe.backbone.get_base_model().config._attn_implementation == "sdpa"
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="attn_implementation"):
        MMoEForSequenceClassification.from_pretrained(saved_models[family], attn_implementation="no_such_attention")


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_from_backbone_with_dtype_and_attn_implementation(tiny_backbone_dirs, family):
    model = MMoEForSequenceClassification.from_backbone(
        str(tiny_backbone_dirs[family]), num_labels=2,
        backbone_kwargs={"dtype": torch.bfloat16, "attn_implementation": "sdpa"},
    ).eval()
    assert model.config.backbone_config._attn_implementation == "sdpa"
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.expert_heads.parameters()} | {p.dtype for p in model.router.parameters()} == {
        torch.float32
    }
    out = model(**_batch(family))
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()


def test_no_split_modules_and_fp32_patterns(tiny_qwen2_dir):
    from transformers.core_model_loading import build_glob_alternation

    model = MMoEForSequenceClassification.from_backbone(str(tiny_qwen2_dir), num_labels=2)
    assert model._no_split_modules == {"Qwen2DecoderLayer"}
    assert model._get_dtype_plan(torch.float32) == {}
    plan = model._get_dtype_plan(torch.bfloat16)
    assert set(plan.values()) == {torch.float32}
    pattern, *_ = build_glob_alternation(list(plan))  # how from_pretrained matches parameter names
    assert pattern.search("expert_heads.synergy.out_proj.weight") and pattern.search("router.net.4.bias")
    # A backbone's own router (mixture-of-experts LLMs) and the LoRA weights are not forced to float32.
    assert not pattern.search("mmoe.backbone.base_model.model.layers.0.mlp.router.weight")
    assert not pattern.search("mmoe.backbone.base_model.model.layers.0.self_attn.q_proj.lora_A.synergy.weight")


# ---------------------------------------------------------------------------------------------- 4. float32 heads
def _dtypes(model: MMoEForSequenceClassification) -> dict[str, set[torch.dtype]]:
    groups: dict[str, set[torch.dtype]] = {"backbone": set(), "lora": set(), "heads": set(), "router": set()}
    for name, param in model.named_parameters():
        group = ("lora" if "lora_" in name else "heads" if name.startswith("expert_heads.")
                 else "router" if name.startswith("router.") else "backbone")
        groups[group].add(param.dtype)
    return groups


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_bf16_backbone_keeps_heads_and_router_in_float32(saved_models, family):
    batch = _batch(family)
    reference = MMoEForSequenceClassification.from_pretrained(saved_models[family]).eval()
    model = MMoEForSequenceClassification.from_pretrained(saved_models[family], dtype=torch.bfloat16).eval()
    assert _dtypes(model) == {
        "backbone": {torch.bfloat16}, "lora": {torch.float32}, "heads": {torch.float32}, "router": {torch.float32}
    }
    # The fp32 heads and router hold exactly the saved values.
    for key, value in reference.state_dict().items():
        if key.startswith(("expert_heads.", "router.")) or "lora_" in key:
            assert torch.equal(model.state_dict()[key], value), key

    with torch.no_grad():
        out, expected = model(**batch), reference(**batch)
    assert out.logits.shape == (4, 3) and out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()
    assert out.expert_logits.shape == (4, 3, 3) and out.expert_logits.dtype == torch.float32
    torch.testing.assert_close(out.router_weights.sum(-1), torch.ones(4), atol=1e-3, rtol=0)
    # bf16 keeps about 3 significant digits: close to the float32 model, not equal.
    torch.testing.assert_close(out.logits.exp(), expected.logits.exp(), atol=0.05, rtol=0)

    model.train().train_expert("uniqueness")
    loss = model(**batch, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(model.expert_parameter_names("uniqueness"))
    assert any("lora_A" in n for n in grads) and any("expert_heads" in n for n in grads)
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all(), name
    assert any(grad.abs().sum() > 0 for name, grad in grads.items() if "lora_B" in name)


def test_missing_router_in_a_bf16_load_is_created_in_float32(saved_bert, tmp_path):
    folder, saved = saved_bert
    partial = _checkpoint_without_router(folder, saved, tmp_path / "no-router")
    model = MMoEForSequenceClassification.from_pretrained(partial, dtype=torch.bfloat16)
    assert _dtypes(model)["router"] == {torch.float32}
    assert torch.isfinite(model.router.net[1].weight).all() and model.router.net[1].weight.std() < 0.03


def test_model_cast_to_bf16_after_construction_still_runs(bert_model, tiny_bert_dir):
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(str(tiny_bert_dir), num_labels=2)
    randomize_lora_weights(model)
    batch = _batch("bert")
    expected = model.eval()(**batch).logits
    model.mmoe.backbone.to(torch.bfloat16)  # a bf16 backbone next to float32 heads
    mixed = model(**batch)
    assert mixed.logits.dtype == torch.float32
    torch.testing.assert_close(mixed.logits, expected, atol=0.05, rtol=0)
    model.to(torch.bfloat16)  # everything bf16, heads included
    out = model(**batch)
    assert out.logits.shape == (4, 2) and torch.isfinite(out.logits.float()).all()
    torch.testing.assert_close(out.logits.float(), expected, atol=0.1, rtol=0)
    # The router stage trains the router head on cached float32 features: the router casts them.
    features = model.router_features(**batch).float()
    assert torch.isfinite(model.router(features).float()).all()


# ---------------------------------------------------------------------------------------------- 5. checkpointing
def _dropout_free_model() -> MMoEForSequenceClassification:
    backbone_config = tiny_backbone_config("bert")
    backbone_config.hidden_dropout_prob = backbone_config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = MMoEForSequenceClassification(MMoEConfig(
        backbone_config=backbone_config, num_labels=2, lora_dropout=0.0, classifier_dropout=0.0, router_dropout=0.0,
    ))
    randomize_lora_weights(model, seed=4)
    return model


def _expert_grads(model: MMoEForSequenceClassification) -> tuple[dict[str, torch.Tensor], int]:
    """One training step of expert "synergy"; returns its grads and how often the first LoRA layer ran."""
    calls = []
    hook = model.mmoe.backbone.get_base_model().encoder.layer[0].attention.self.query.register_forward_hook(
        lambda *_: calls.append(1)
    )
    model.train().train_expert("synergy")
    model.zero_grad(set_to_none=True)
    model(**_batch("bert"), labels=torch.tensor([0, 1, 1, 0])).loss.backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return grads, len(calls)


@pytest.mark.parametrize(
    "enable",
    [
        pytest.param(lambda m: m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False}),
                     id="non-reentrant"),
        pytest.param(lambda m: m.gradient_checkpointing_enable(), id="default"),
        pytest.param(lambda m: m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True}),
                     id="reentrant"),
        pytest.param(lambda m: m.activation_checkpointing_enable(), id="activation_checkpointing_enable"),
    ],
)
def test_gradient_checkpointing_gives_the_same_expert_grads(enable):
    model = _dropout_free_model()
    expected, plain_calls = _expert_grads(model)
    assert set(expected) == set(model.expert_parameter_names("synergy"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # gradient_checkpointing_enable is a deprecated alias
        enable(model)
    assert model.is_activation_checkpointing
    grads, checkpointed_calls = _expert_grads(model)
    assert checkpointed_calls == 2 * plain_calls  # the layer really is recomputed in the backward pass
    assert set(grads) == set(expected)
    for name in expected:
        torch.testing.assert_close(grads[name], expected[name], atol=1e-5, rtol=1e-5)


def test_input_embeddings_are_the_backbones():
    model = _dropout_free_model()
    assert model.get_input_embeddings() is model.mmoe.backbone.get_base_model().embeddings.word_embeddings
    new = torch.nn.Embedding(model.config.backbone_config.vocab_size, HIDDEN, padding_idx=0)
    model.set_input_embeddings(new)
    assert model.mmoe.backbone.get_base_model().embeddings.word_embeddings is new
    assert model.get_input_embeddings() is new
