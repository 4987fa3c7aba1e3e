"""Every stage's objective is computed by ``MMoEForSequenceClassification.forward``, so a plain ``transformers.Trainer``
trains one expert (``train_expert``) and the router (``train_router``, both ``router_objective``s), from backbone inputs
or from cached ``router_inputs`` / ``expert_logits`` columns, and changes exactly the parameters of that stage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import Trainer, TrainingArguments, default_data_collator

from mmoe import MMoEConfig, MMoEForSequenceClassification
from mmoe.testing import randomize_lora_weights, tiny_backbone_config, tiny_tokenizer

TEXTS = [
    "a snowy day", "warm sun is nice on the beach", "rain", "what a lovely cold morning",
    "the dog is happy", "sad rainy street", "great photo of the sky", "terrible weather in spring",
]
LABELS = [0, 1, 0, 1, 1, 0, 1, 0]
INTERACTIONS = [0, 1, 2, 0, 1, 2, 0, 1]
GAMMA, ALPHA = 2.0, 0.75  # alpha != 1 so that a loss that ignores it is caught


def _model(router_input: str = "adapter", objective: str = "mixture") -> MMoEForSequenceClassification:
    torch.manual_seed(0)
    config = MMoEConfig(
        backbone_config=tiny_backbone_config("bert"), num_labels=2, lora_r=4, router_hidden_size=8,
        router_input=router_input, router_objective=objective, router_focal_gamma=GAMMA, router_focal_alpha=ALPHA,
    )
    model = MMoEForSequenceClassification(config)
    randomize_lora_weights(model, seed=1)  # experts differ from each other and from the bare backbone
    return model


def _encoded() -> dict[str, torch.Tensor]:
    # Padded to one length, so that every column stacks with default_data_collator.
    return dict(tiny_tokenizer()(TEXTS, padding="max_length", max_length=16, return_tensors="pt"))


def _text_dataset() -> Dataset:
    columns = {key: value.tolist() for key, value in _encoded().items()}
    # `text` is not an argument of forward: remove_unused_columns must drop it.
    return Dataset.from_dict({**columns, "text": TEXTS, "labels": LABELS, "interaction_labels": INTERACTIONS})


def _cached(model: MMoEForSequenceClassification) -> dict[str, torch.Tensor]:
    """What a pipeline caches before the router stage: the router's features and the frozen experts' logits."""
    batch = _encoded()
    model.train_mixture().eval()
    with torch.no_grad():
        expert_logits = model(**batch).expert_logits
    return {"router_inputs": model.router_features(**batch), "expert_logits": expert_logits}


def _train(model, dataset: Dataset, tmp_path, label_names: list[str], steps: int = 3) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=steps, per_device_train_batch_size=4,
        per_device_eval_batch_size=len(TEXTS), learning_rate=1e-2, report_to="none", use_cpu=True,
        save_strategy="no", logging_strategy="no", label_names=label_names, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                      data_collator=default_data_collator)
    trainer.train()
    return trainer


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def _changed(model, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}


def _focal(router_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    p = router_logits.float().softmax(-1)[torch.arange(len(targets)), targets]
    return (ALPHA * (1 - p) ** GAMMA * -p.log()).mean()


def _fused_nll(router_logits: torch.Tensor, expert_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    weights = router_logits.float().softmax(-1)  # [B, E]
    probs = (weights.unsqueeze(-1) * expert_logits.float().softmax(-1)).sum(1)  # [B, C]
    return -probs[torch.arange(len(labels)), labels].log().mean()


@pytest.mark.parametrize("objective", ["mixture", "interaction"])
@pytest.mark.parametrize("router_input", ["adapter", "backbone", "experts"])
def test_trainer_trains_the_router_from_backbone_inputs(objective, router_input, tmp_path):
    """The router's own pass runs with gradients (its adapter trains too), the experts are frozen; the Trainer's
    eval loss is the objective computed by hand from the returned router and expert logits."""
    model = _model(router_input, objective).train_router()
    before = _snapshot(model)
    label_names = ["labels"] if objective == "mixture" else ["interaction_labels"]
    trainer = _train(model, _text_dataset(), tmp_path, label_names)
    changed = _changed(model, before)
    assert changed == set(model.router_parameter_names())
    if router_input == "adapter":
        assert any(".lora_B.router_adapter." in name for name in changed)

    model.eval()
    labels, interactions = torch.tensor(LABELS), torch.tensor(INTERACTIONS)
    with torch.no_grad():
        out = model(**_encoded(), labels=labels, interaction_labels=interactions)
    assert out.logits.shape == (8, 2) and out.expert_logits.shape == (8, 3, 2) and out.router_logits.shape == (8, 3)
    expected = (_fused_nll(out.router_logits, out.expert_logits, labels) if objective == "mixture"
                else _focal(out.router_logits, interactions))
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(torch.tensor(trainer.evaluate()["eval_loss"]), expected, rtol=1e-4, atol=1e-5)
    # `logits` are the log fused probabilities, as in mixture mode
    fused = (out.router_weights.unsqueeze(-1) * out.expert_logits.softmax(-1)).sum(1)
    torch.testing.assert_close(out.logits.exp(), fused)


@pytest.mark.parametrize("objective", ["mixture", "interaction"])
def test_trainer_trains_the_router_head_on_cached_columns(objective, tmp_path):
    """Only ``router_inputs`` + ``expert_logits`` + labels, no ``input_ids``: the backbone never runs, so only
    ``router.*`` can change (the router's adapter gets no gradient from cached features)."""
    model = _model("adapter", objective)
    cached = _cached(model)
    columns = {"router_inputs": cached["router_inputs"].tolist(), "expert_logits": cached["expert_logits"].tolist(),
               "labels": LABELS, "interaction_labels": INTERACTIONS}
    dataset = Dataset.from_dict(columns)
    model.train_router()
    before = _snapshot(model)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although the router's inputs were cached")

    handle = model.mmoe.register_forward_pre_hook(no_backbone)
    try:
        label_names = ["labels"] if objective == "mixture" else ["interaction_labels"]
        trainer = _train(model, dataset, tmp_path, label_names)
        metrics = trainer.evaluate()
    finally:
        handle.remove()
    changed = _changed(model, before)
    assert changed and changed == {name for name in model.router_parameter_names() if name.startswith("router.")}

    model.eval()
    with torch.no_grad():
        out = model(router_inputs=cached["router_inputs"], expert_logits=cached["expert_logits"],
                    labels=torch.tensor(LABELS), interaction_labels=torch.tensor(INTERACTIONS))
    expected = (_fused_nll(out.router_logits, cached["expert_logits"], torch.tensor(LABELS)) if objective == "mixture"
                else _focal(out.router_logits, torch.tensor(INTERACTIONS)))
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(torch.tensor(metrics["eval_loss"]), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.expert_logits, cached["expert_logits"])


def test_interaction_objective_on_router_inputs_alone_needs_no_expert_logits():
    """The paper's router is an interaction classifier: its features and interaction labels are enough; there is then
    nothing to fuse, so ``logits`` and ``expert_logits`` are ``None``."""
    model = _model("backbone", "interaction")
    features = _cached(model)["router_inputs"]
    model.train_router().eval()
    with torch.no_grad():
        out = model(router_inputs=features, interaction_labels=torch.tensor(INTERACTIONS))
    assert out.logits is None and out.expert_logits is None
    torch.testing.assert_close(out.loss, _focal(out.router_logits, torch.tensor(INTERACTIONS)))
    model.config.router_objective = "mixture"
    with pytest.raises(ValueError, match="expert_logits"):
        model(router_inputs=features, labels=torch.tensor(LABELS))


@pytest.mark.parametrize("router_input", ["adapter", "backbone", "experts"])
def test_cached_inputs_give_the_full_forward_values(router_input):
    """``router_inputs`` (from ``router_features``) and ``expert_logits`` stand in exactly for what they cache, and
    router mode predicts what mixture mode predicts."""
    model = _model(router_input)
    batch, cached = _encoded(), _cached(model)
    labels = torch.tensor(LABELS)
    with torch.no_grad():
        mixture = model.train_mixture().eval()(**batch, labels=labels)
        full = model.train_router().eval()(**batch, labels=labels)
        from_cache = model(**cached, labels=labels)
        features_only = model(**batch, router_inputs=cached["router_inputs"], labels=labels)
    for out in (full, from_cache, features_only):
        for field in ("loss", "logits", "expert_logits", "router_weights", "router_logits"):
            torch.testing.assert_close(out[field], mixture[field], rtol=1e-5, atol=1e-6)


def test_router_mode_computes_the_frozen_experts_without_gradient_or_dropout():
    """In training mode the frozen experts run as constants (no dropout, as when their logits are cached), while the
    router's own pass keeps its gradients."""
    model = _model("adapter")
    batch, cached = _encoded(), _cached(model)
    model.train_router().train()
    out = model(**batch, labels=torch.tensor(LABELS))
    assert not out.expert_logits.requires_grad and out.router_logits.requires_grad
    torch.testing.assert_close(out.expert_logits, cached["expert_logits"])
    assert all(module.training for module in model.modules())  # the train/eval state is restored


def test_trainer_trains_one_expert_and_nothing_else(tmp_path):
    """``train_expert``: ``logits`` are the expert's log-probabilities, ``expert_logits`` ``[B, 1, C]`` its raw logits,
    ``loss`` its cross-entropy; a Trainer changes that expert's adapter and head only."""
    model = _model("adapter").train_expert("synergy")
    before = _snapshot(model)
    trainer = _train(model, _text_dataset(), tmp_path, ["labels"])
    assert _changed(model, before) == set(model.expert_parameter_names("synergy"))

    model.eval()
    with torch.no_grad():
        out = model(**_encoded(), labels=torch.tensor(LABELS))
    assert out.logits.shape == (8, 2) and out.expert_logits.shape == (8, 1, 2) and out.router_weights is None
    torch.testing.assert_close(out.logits, F.log_softmax(out.expert_logits[:, 0], dim=-1))
    expected = F.cross_entropy(out.expert_logits[:, 0], torch.tensor(LABELS))
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(torch.tensor(trainer.evaluate()["eval_loss"]), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="train_router"):
        model(**_encoded(), expert_logits=torch.zeros(8, 3, 2))


def test_cached_inputs_of_the_wrong_shape_are_refused():
    model = _model("backbone").train_router()
    cached = _cached(model)
    model.train_router()
    with pytest.raises(ValueError, match=r"expert_logits.*\[8, 3, 2\]"):
        model(router_inputs=cached["router_inputs"], expert_logits=cached["expert_logits"][:, :2],
              labels=torch.tensor(LABELS))
    with pytest.raises(ValueError, match=r"router_inputs.*\[8, 32\]"):
        model(router_inputs=cached["router_inputs"][:, :5], expert_logits=cached["expert_logits"])
    with pytest.raises(ValueError, match="fused with the router"):
        model(**cached, fusion="average")
