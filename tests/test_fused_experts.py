"""The fused expert path: equal to peft's per-adapter computation, trainable per expert, compilable."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import Linear as LoraLinear

from mmoe import MMoEForSequenceClassification
from mmoe.fused_lora import FusedLoraLinear, install_fused_lora
from mmoe.testing import randomize_lora_weights, tiny_tokenizer

TEXTS = ["a snowy day", "warm sun is nice on the beach", "rain", "what a lovely cold morning"]


def _model(backbone_dir, **config) -> MMoEForSequenceClassification:
    torch.manual_seed(0)
    model = MMoEForSequenceClassification.from_backbone(
        str(backbone_dir), num_labels=2, lora_r=4, router_hidden_size=8, lora_dropout=0.0, classifier_dropout=0.0,
        **config,
    )
    randomize_lora_weights(model, seed=1)  # experts differ from each other and from the backbone
    return model


def _batch(family: str) -> dict[str, torch.Tensor]:
    tokenizer = tiny_tokenizer()
    if family != "bert":
        tokenizer.padding_side = "left"
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def _passes(model, batch, mode: str):
    """``expert_hidden_states`` [B, E, H] and ``pooled_output`` [B, H] through one of the three paths."""
    model.config.fused_experts = mode == "fused"
    model.config.batched_experts = mode != "sequential"  # "peft": peft's mixed-adapter batch
    with torch.no_grad():
        out = model.mmoe(**batch)
    return out.expert_hidden_states, out.pooled_output


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_fused_equals_peft_per_adapter(family, tiny_backbone_dirs):
    model = _model(tiny_backbone_dirs[family]).eval()
    batch = _batch(family)
    fused_states, fused_pooled = _passes(model, batch, "fused")
    for mode in ("sequential", "peft"):  # peft running one adapter at a time, and peft's mixed batch
        states, pooled = _passes(model, batch, mode)
        torch.testing.assert_close(fused_states, states, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused_pooled, pooled, rtol=1e-5, atol=1e-5)
    # the experts really differ, so the comparison can tell them apart
    assert (fused_states[:, 0] - fused_states[:, 1]).abs().max() > 1e-3


def test_fused_layers_stay_peft_layers(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    plain = _model(tiny_bert_dir, fused_experts=False)
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert layers and all(type(m) is FusedLoraLinear for m in layers)
    assert list(model.state_dict()) == list(plain.state_dict())  # same parameters, same keys
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_fused_gradients_reach_each_expert_only(tiny_bert_dir):
    model = _model(tiny_bert_dir).train()
    batch = _batch("bert")
    target = 1  # the uniqueness expert
    grads = {}
    for mode in ("fused", "sequential"):
        model.zero_grad()
        model.config.fused_experts, model.config.batched_experts = mode == "fused", mode == "fused"
        states = model.mmoe(**batch).expert_hidden_states
        (states[:, target] ** 2).sum().backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
    expert = model.experts[target]
    touched = {n for n, g in grads["fused"].items() if g.abs().sum() > 0}
    assert touched and all(f".{expert}." in n for n in touched)
    assert any("lora_A" in n for n in touched) and any("lora_B" in n for n in touched)
    assert grads["fused"].keys() >= {n for n, g in grads["sequential"].items() if g.abs().sum() > 0}
    for name, grad in grads["sequential"].items():
        torch.testing.assert_close(grads["fused"][name], grad, rtol=1e-5, atol=1e-5)


def test_unsupported_lora_layers_fall_back_to_peft(tiny_bert_dir):
    """Experts with different ranks cannot share one batched product: the model keeps peft's mixed batch."""
    model = _model(tiny_bert_dir)
    backbone = model.mmoe.backbone
    layer = next(m for m in backbone.modules() if isinstance(m, LoraLinear))
    layer.r = {**layer.r, model.experts[0]: 8}
    assert install_fused_lora(backbone, model.experts) is None


def test_compiles_without_graph_breaks(tiny_bert_dir):
    model = _model(tiny_bert_dir).eval()
    batch = _batch("bert")
    with torch.no_grad():
        eager = model(**batch)
        compiled = torch.compile(model, fullgraph=True)(**batch)
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.expert_logits, eager.expert_logits, rtol=1e-5, atol=1e-5)


def test_router_reading_the_experts_needs_no_backbone_pass_of_its_own(tiny_bert_dir):
    model = _model(tiny_bert_dir, router_input="experts").eval()
    batch = _batch("bert")
    rows: list[int] = []
    embeddings = model.get_input_embeddings()
    handle = embeddings.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    with torch.no_grad():
        out = model(**batch)
        states = model.mmoe(**batch, output_pooled_output=False).expert_hidden_states
    handle.remove()
    assert rows[0] == 3 * len(TEXTS)  # one fused pass over the three experts' rows, no adapter-free group
    # independent: the router applied by hand to the experts' states side by side
    expected = torch.softmax(model.router.net(states.flatten(1)), dim=-1)
    torch.testing.assert_close(out.router_weights, expected, rtol=1e-5, atol=1e-6)
    assert model.router_features(**batch).shape == (len(TEXTS), 3 * model.mmoe.hidden_size)
    with pytest.raises(ValueError, match="unknown router_input"):
        _model(tiny_bert_dir, router_input="pooled")


def test_activation_checkpointing_trains_the_mixture_correctly(tiny_bert_dir):
    """Checkpointing recomputes each layer during backward: the fused plan must still hold then, so the gradients
    equal those without checkpointing. Without the fused path, training several experts at once is refused."""
    batch = _batch("bert")
    labels = torch.tensor([0, 1, 1, 0])
    grads = {}
    for checkpointing in (False, True):
        model = _model(tiny_bert_dir).train_mixture().train()
        for config in (model.config.backbone_config, model.mmoe.backbone.get_base_model().config):
            config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model(**batch, labels=labels).loss.backward()
        grads[checkpointing] = {n: p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
    assert grads[False] and grads[False].keys() == grads[True].keys()
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-4, atol=1e-6)
    model = _model(tiny_bert_dir, fused_experts=False).train_mixture().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with pytest.raises(ValueError, match="needs the fused expert path"):
        model(**batch, labels=labels)
