"""I2MoE (``--method i2moe``): masking, interaction losses, gradients, the no-loss ablation, 2 and 3 modalities,
saving and loading, and the refusals of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import DatasetDict
from transformers import AutoModel, AutoModelForSequenceClassification

from mmoe import I2MoEConfig, I2MoEForSequenceClassification, I2MoEModel
from mmoe.data.modalities import ModalityCollator, format_with_spans, modality_ids_from_offsets
from mmoe.data.synthetic import SyntheticConfig, make_synthetic_dataset
from mmoe.losses import redundancy_loss, synergy_loss, uniqueness_loss
from mmoe.testing import randomize_lora_weights, tiny_backbone_config, tiny_tokenizer
from mmoe.training.cli import main, train

MODALITIES = ["caption", "text"]


def _model(modalities=MODALITIES, seed: int = 0, **config) -> I2MoEForSequenceClassification:
    torch.manual_seed(seed)
    backbone = tiny_backbone_config()
    backbone.hidden_dropout_prob = backbone.attention_probs_dropout_prob = 0.0
    defaults = dict(lora_dropout=0.0, classifier_dropout=0.0, reweighting_dropout=0.0, interaction_loss_weight=0.5)
    config = I2MoEConfig(backbone_config=backbone, num_labels=2, modalities=list(modalities), **{**defaults, **config})
    model = I2MoEForSequenceClassification(config)
    randomize_lora_weights(model, seed=seed)
    return model


def _rows(modalities=MODALITIES, n: int = 4) -> list[dict]:
    words = ["sunny beach", "dark field at night", "happy birthday", "so wonderful", "red circle", "blue sky"]
    return [{**{m: f"{words[(i + j) % len(words)]} {m}" for j, m in enumerate(modalities)}, "label": i % 2}
            for i in range(n)]


def _batch(modalities=MODALITIES, n: int = 4) -> dict[str, torch.Tensor]:
    template = " | ".join("{" + m + "}" for m in modalities)
    collator = ModalityCollator(tokenizer=tiny_tokenizer(), text_template=template, max_length=128,
                                modalities=list(modalities))
    return collator(_rows(modalities, n))


# ---------------------------------------------------------------------------------------------- modalities
def test_modality_ids_follow_the_columns_through_the_tokenizer():
    text, spans = format_with_spans({"caption": "a red circle", "text": "so happy"}, "{caption} | {text}",
                                    MODALITIES)
    assert text == "a red circle | so happy"
    assert spans == [(0, 12, 0), (15, 23, 1)]
    tokenizer = tiny_tokenizer()
    encoded = tokenizer([text], return_offsets_mapping=True, return_tensors="pt")
    ids = modality_ids_from_offsets(encoded["offset_mapping"], [spans])[0]
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    # independent: decode each modality's tokens and compare with its column
    by_modality = {m: tokenizer.convert_tokens_to_string([t for t, i in zip(tokens, ids) if i == k])
                   for k, m in enumerate(MODALITIES)}
    assert by_modality == {"caption": "a red circle", "text": "so happy"}
    outside = [t for t, i in zip(tokens, ids) if i == -1]
    assert outside == ["[CLS]", "|", "[SEP]"]


def test_masking_replaces_exactly_the_positions_of_one_modality():
    model = _model().train()
    batch = _batch()
    inputs = model.mmoe.backbone_inputs({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    grouped = model._grouped_inputs(inputs, batch["modality_ids"], [None, 0, 1], batch_size=4)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    groups = grouped["inputs_embeds"].view(3, *embeds.shape)
    assert "input_ids" not in grouped and grouped["attention_mask"].shape[0] == 12
    torch.testing.assert_close(groups[0], embeds)
    for modality in (0, 1):
        changed = (groups[1 + modality] != embeds).any(-1)  # [B, T]
        assert torch.equal(changed, batch["modality_ids"] == modality)


# ---------------------------------------------------------------------------------------------- losses
def test_interaction_losses_match_their_definitions():
    torch.manual_seed(0)
    full, m0, m1, m2 = (torch.randn(5, 3) for _ in range(4))

    def distance(a, b):
        return ((a - b + 1e-7) ** 2).sum(1).sqrt()  # torch's pairwise_distance adds eps to the difference

    def triplet(anchor, positive, negative):
        return torch.clamp(distance(anchor, positive) - distance(anchor, negative) + 1.0, min=0).mean()

    def cosine(a, b):
        return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean()

    # uniqueness expert of modality 1 with three modalities: negative = modality 1 masked, positives = 0 and 2
    expected = (triplet(full, m0, m1) + triplet(full, m2, m1)) / 2
    torch.testing.assert_close(uniqueness_loss(full, [m0, m1, m2], 1), expected)
    torch.testing.assert_close(synergy_loss(full, [m0, m1]), (cosine(full, m0) + cosine(full, m1)) / 2)
    torch.testing.assert_close(redundancy_loss(full, [m0, m1]), 1 - (cosine(full, m0) + cosine(full, m1)) / 2)
    # the losses reward what they should: an output that ignores a masked modality has zero redundancy loss
    assert redundancy_loss(full, [full.clone(), 2 * full]).abs() < 1e-6
    assert synergy_loss(full, [-full]) == pytest.approx(-1.0)


def test_total_loss_is_task_loss_plus_lambda_times_mean_interaction_loss():
    model = _model(interaction_loss_weight=0.5).train()
    batch = _batch()
    out = model(**batch)
    assert out.interaction_losses.shape == (4,)
    task = F.cross_entropy(out.logits, batch["labels"])
    torch.testing.assert_close(out.loss, task + 0.5 * out.interaction_losses.mean())
    torch.testing.assert_close(out.interaction_loss, out.interaction_losses.mean())


def test_gradients_reach_every_expert_and_the_reweighting_model():
    model = _model().train()
    model(**_batch()).loss.backward()
    for expert in model.experts:
        names = model.expert_parameter_names(expert)
        assert any(".lora_A." in n for n in names) and any(n.startswith("expert_heads.") for n in names)
        for name in names:
            grad = dict(model.named_parameters())[name].grad
            assert grad is not None and grad.abs().sum() > 0, name
    for name, param in model.reweighting.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    frozen = [n for n, p in model.named_parameters() if ".lora_" not in n and n.startswith("mmoe.")]
    assert frozen and all(not dict(model.named_parameters())[n].requires_grad for n in frozen)


def test_lambda_zero_is_the_plain_weighted_mixture():
    model = _model(interaction_loss_weight=0.0).train()
    batch = _batch()
    out = model(**batch)
    assert out.interaction_loss is None
    # independent computation: each expert alone through peft, the adapter-free pass for the weights
    peft_model = model.mmoe.backbone
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    expert_logits = []
    for expert in model.experts:
        peft_model.base_model.set_adapter(expert)
        hidden = peft_model(**inputs).last_hidden_state
        expert_logits.append(model.expert_heads[expert](hidden[:, 0]))
    expert_logits = torch.stack(expert_logits, 1)
    with peft_model.disable_adapter():
        hidden = peft_model(**inputs).last_hidden_state
    features = []
    for index in range(2):
        weight = (batch["modality_ids"] == index).float().unsqueeze(-1)
        features.append((hidden * weight).sum(1) / weight.sum(1))
    weights = model.reweighting.net(torch.cat(features, -1)).softmax(-1)
    logits = (weights.unsqueeze(-1) * expert_logits).sum(1)
    torch.testing.assert_close(out.expert_logits, expert_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.expert_weights, weights, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, batch["labels"]), rtol=1e-4, atol=1e-5)
    # `logits` are the log class probabilities of the weighted sum of the experts' logits
    torch.testing.assert_close(out.logits, logits.log_softmax(-1), rtol=1e-4, atol=1e-5)


def test_fused_and_sequential_passes_agree_in_training():
    batch = _batch()
    outs = []
    for fused in (True, False):
        model = _model(fused_experts=fused).train()
        torch.manual_seed(1)  # the same random vectors for the masked modalities
        outs.append(model(**batch))
    torch.testing.assert_close(outs[0].interaction_losses, outs[1].interaction_losses, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[0].loss, outs[1].loss, rtol=1e-4, atol=1e-5)


def test_global_reweighting_uses_one_weight_vector():
    model = _model(reweighting="global").eval()
    with torch.no_grad():
        model.reweighting.scores.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
        out = model(**_batch())
    expected = torch.tensor([0.0, 1.0, 2.0, 3.0]).softmax(-1)
    torch.testing.assert_close(out.expert_weights, expected.expand(4, -1))


def test_three_modalities_give_five_experts_and_train():
    modalities = ["caption", "context", "text"]
    model = _model(modalities).train()
    assert model.experts == ["uniqueness_caption", "uniqueness_context", "uniqueness_text", "synergy", "redundancy"]
    out = model(**_batch(modalities))
    assert out.expert_weights.shape == (4, 5) and out.interaction_losses.shape == (5,)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("reweighting."))
    explanation = model.explain(**_batch(modalities))
    assert explanation["expert_weights"].shape == (4, 5)
    assert torch.equal(explanation["expert_predictions"], explanation["expert_probabilities"].argmax(-1))
    torch.testing.assert_close(explanation["expert_weights"].sum(-1), torch.ones(4))


# ---------------------------------------------------------------------------------------------- saving
def test_save_and_reload_without_mmoe_installed(tmp_path):
    model = _model().eval()
    batch = _batch()
    with torch.no_grad():
        expected = model(**batch)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "i2moe" and config["modalities"] == MODALITIES
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_i2moe.I2MoEForSequenceClassification"
    assert {"modeling_i2moe.py", "modeling_mmoe.py", "configuration_mmoe.py"} <= {p.name for p in folder.iterdir()}
    torch.save(dict(batch), tmp_path / "batch.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["mmoe"] = None
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "I2MoEForSequenceClassification", type(model)
        base = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(base).__name__ == "I2MoEModel", type(base)
        with torch.no_grad():
            out = model(**batch)
        torch.save((out.logits, out.expert_weights), {str(tmp_path / "out.pt")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"),
                                 "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    logits, weights = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(logits, expected.logits)
    torch.testing.assert_close(weights, expected.expert_weights)
    local = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert isinstance(local, I2MoEForSequenceClassification)
    assert isinstance(AutoModel.from_pretrained(folder), I2MoEModel)


def test_configs_are_siblings_and_an_earlier_i2moe_config_with_router_fields_loads(tmp_path):
    """I2MoEConfig and MMoEConfig share MixtureConfig, and neither has the other's fields; a config.json written when
    I2MoEConfig still inherited the router's fields loads (those are dropped)."""
    from mmoe import MixtureConfig, MMoEConfig

    assert issubclass(I2MoEConfig, MixtureConfig) and issubclass(MMoEConfig, MixtureConfig)
    assert not issubclass(I2MoEConfig, MMoEConfig) and not issubclass(MMoEConfig, I2MoEConfig)
    model = _model().eval()
    assert not any(key.startswith("router") or key in ("fusion", "prior_weights") for key in model.config.to_dict())
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(router_hidden_size=256, router_dropout=0.1, router_input="backbone", router_focal_gamma=2.0,
                  router_focal_alpha=1.0, fusion="router", prior_weights=None)
    (folder / "config.json").write_text(json.dumps(config))
    again = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert isinstance(again, I2MoEForSequenceClassification) and not hasattr(again.config, "router_input")
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits)


def test_truncation_cuts_the_longest_column_first_and_keeps_every_modality():
    """MUStARD-like: a long caption and context before a short utterance. An end cut at max_length would drop the
    utterance; the longest-first cut trims caption and context to equal lengths and keeps the utterance whole."""
    names = ["caption", "context", "text"]
    tokenizer = tiny_tokenizer()
    row = {"caption": "a man on a red sofa in a bright room " * 6, "context": "you said you would come " * 4,
           "text": "oh great", "label": 1}
    template = "{caption} | {context} | {text}"
    batch = ModalityCollator(tokenizer=tokenizer, text_template=template, max_length=40, modalities=names)([row])
    counts = [int((batch["modality_ids"][0] == i).sum()) for i in range(3)]
    full = [len(tokenizer(row[name], add_special_tokens=False)["input_ids"]) for name in names]
    # Independently: the template's own tokens (special tokens, separators) and the utterance stay; caption and
    # context share the rest, longest first, so they end within one token of each other.
    overhead = len(tokenizer(template.format(caption="", context="", text=""))["input_ids"])
    assert batch["input_ids"].shape[1] == 40 and counts[2] == full[2]
    assert counts[0] + counts[1] == 40 - overhead - full[2] and abs(counts[0] - counts[1]) <= 1
    kept = batch["input_ids"][0][batch["modality_ids"][0] == 0].tolist()
    assert kept == tokenizer(row["caption"], add_special_tokens=False)["input_ids"][: counts[0]]  # a prefix
    end_cut = tokenizer(template.format(**row), truncation=True, max_length=40)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("great") not in end_cut  # what the end cut would have lost


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="at least two modalities"):
        I2MoEConfig(backbone_config=tiny_backbone_config(), num_labels=2, modalities=["text"])
    with pytest.raises(ValueError, match="follow from the modalities"):
        I2MoEConfig(backbone_config=tiny_backbone_config(), num_labels=2, experts=["a", "b"])
    with pytest.raises(ValueError, match="not columns of the text template"):
        ModalityCollator(tokenizer=tiny_tokenizer(), text_template="{caption} | {text}", modalities=["scene", "text"])
    with pytest.raises(ValueError, match="'image' is the image of a vision-language backbone"):
        ModalityCollator(tokenizer=tiny_tokenizer(), text_template="{caption} | {text}", modalities=["image", "text"])
    collator = ModalityCollator(tokenizer=tiny_tokenizer(), text_template="{caption} | {text}", modalities=MODALITIES)
    rows = _rows()
    rows[2]["caption"] = ""
    with pytest.raises(ValueError, match="'caption' has no token in 1 row"):
        collator(rows)
    model = _model()
    batch = _batch()
    with pytest.raises(ValueError, match="needs `modality_ids`"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ids = batch["modality_ids"].clone()
    ids[1][ids[1] == 1] = -1
    with pytest.raises(ValueError, match="'text' has no input position in row"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], modality_ids=ids)
    with pytest.raises(ValueError, match="takes no images"):
        _model(["image", "text"])


def test_cli_refuses_bad_i2moe_options_before_training(capsys, monkeypatch):
    from mmoe.training import sources
    from mmoe.training.trainer import MMoETrainer

    monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("the data was loaded"))
    monkeypatch.setattr(MMoETrainer, "train", lambda *a, **k: pytest.fail("the trainer ran"))
    base = ["--preset", "demo", "--backbone", "tiny-bert", "--output_dir", "/tmp/never"]
    for flags, message in (
        (["--method", "i2moe", "--modalities", "caption", "scene"], "['scene'] are not columns"),
        (["--method", "i2moe", "--modalities", "text"], "at least two modalities"),
        (["--modalities", "caption", "text", "scene"], "MMoE's categorization compares two"),
        (["--method", "i2moe", "--text_template", "{text}"], "only ['text']"),
        (["--method", "i2moe", "--interaction_loss_weight", "-1"], "--interaction_loss_weight must be"),
        (["--method", "i2moe2"], "invalid choice: 'i2moe2'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(base + flags)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- pipeline
SHRINK = ["--synthetic_num_train", "48", "--synthetic_num_validation", "24", "--synthetic_num_test", "24",
          "--max_steps", "2", "--num_folds", "2", "--disable_tqdm", "true", "--max_length", "128"]


def test_i2moe_pipeline_end_to_end(tmp_path):
    out = tmp_path / "run"
    results = train(["--preset", "demo", "--backbone", "tiny-bert", "--method", "i2moe", "--output_dir", str(out),
                     *SHRINK])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["method"] == "i2moe" and saved["experts"] == [
        "uniqueness_caption", "uniqueness_text", "synergy", "redundancy"]
    interpretation = saved["interpretation"]
    assert sum(interpretation["mean_weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(interpretation["weights_by_gold_interaction"]) <= {"redundancy", "uniqueness", "synergy"}
    # the scores are recomputed from the saved model's own logits on the evaluation split
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    dataset = DatasetDict.load_from_disk(str(out / "categorize" / "dataset"))
    collator = ModalityCollator(tokenizer=tiny_tokenizer_from(out), text_template="{caption} | {text}",
                                max_length=128, modalities=MODALITIES)
    rows = [dataset["test"][i] for i in range(len(dataset["test"]))]
    batch = collator(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits
    accuracy = float((logits.argmax(-1) == labels).float().mean())
    assert saved["mmoe"]["accuracy"] == pytest.approx(accuracy)
    assert results["mmoe"]["accuracy"] == pytest.approx(accuracy)
    assert (out / "uniqueness_caption").is_dir() is False  # a local backbone is embedded, not referenced

    # A reused categorization (e.g. copied from an MMoE run) is checked too, before the finished stages are read.
    from mmoe.training.validation import ArgumentsError

    dataset["test"] = dataset["test"].map(lambda row, i: {"caption": "" if i == 3 else row["caption"]},
                                          with_indices=True)
    dataset.save_to_disk(str(out / "categorize" / "dataset.new"))
    (out / "categorize" / "dataset").rename(out / "categorize" / "dataset.old")
    (out / "categorize" / "dataset.new").rename(out / "categorize" / "dataset")
    with pytest.raises(ArgumentsError, match=r"'caption' has no token in 1 row\(s\) of the test split \(rows \[3\]"):
        train(["--preset", "demo", "--backbone", "tiny-bert", "--method", "i2moe", "--output_dir", str(out), *SHRINK])


def tiny_tokenizer_from(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_i2moe_pipeline_with_three_text_modalities(tmp_path):
    data = make_synthetic_dataset(SyntheticConfig(num_train=48, num_validation=24, num_test=24))
    data = data.remove_columns("image").map(lambda row: {  # short columns: the tiny tokenizer spells words out
        "caption": " ".join(row["caption"].split()[3:7]), "context": f"earlier {row['text'].split()[0]}"})
    data.save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "run"
    train(["--dataset", str(tmp_path / "data"), "--backbone", "tiny-bert", "--method", "i2moe",
           "--text_template", "{caption} | {context} | {text}", "--output_dir", str(out), *SHRINK[6:]])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["experts"] == ["uniqueness_caption", "uniqueness_context", "uniqueness_text", "synergy",
                                "redundancy"]
    assert len(saved["interpretation"]["mean_weights"]) == 5
    assert json.loads((out / "config.json").read_text())["modalities"] == ["caption", "context", "text"]


def test_max_length_beyond_the_backbone_positions_is_refused_before_training(tmp_path):
    from mmoe.training.validation import ArgumentsError

    with pytest.raises(ArgumentsError, match="--max_length 512 exceeds the 128 positions"):
        train(["--preset", "demo", "--backbone", "tiny-bert", "--output_dir", str(tmp_path / "run"),
               *SHRINK[:-2], "--max_length", "512"])
    assert not (tmp_path / "run" / "categorize" / "stage_complete.json").exists()


# ---------------------------------------------------------------------------------------------- vision-language
def test_vilt_masks_the_image_at_its_pixels_and_marks_text_positions():
    from mmoe.data.modalities import MultimodalModalityCollator
    from mmoe.testing_vision import tiny_image_text_dataset, tiny_vlm_config, tiny_vlm_processor

    torch.manual_seed(0)
    config = I2MoEConfig(backbone_config=tiny_vlm_config("vilt"), num_labels=2, modalities=["image", "text"])
    model = I2MoEForSequenceClassification(config).train()
    rows = [dict(row) for row in tiny_image_text_dataset(4)]
    collator = MultimodalModalityCollator(tiny_vlm_processor("vilt"), text_template="{text}", image_column="image",
                                          max_length=32, modalities=["image", "text"])
    batch = collator(rows)
    # the text modality is exactly the non-special text tokens
    special_ids = collator._tokenizer.all_special_ids
    special = torch.tensor([[t in special_ids for t in row] for row in batch["input_ids"].tolist()])
    assert torch.equal(batch["modality_ids"] == 1, batch["attention_mask"].bool() & ~special)
    inputs = model.mmoe.backbone_inputs({k: v for k, v in batch.items() if k not in ("labels", "modality_ids")})
    grouped = model._grouped_inputs(inputs, batch["modality_ids"], [None, 0, 1], batch_size=4)
    pixels = grouped["pixel_values"].view(3, *batch["pixel_values"].shape)
    embeds = grouped["inputs_embeds"].view(3, 4, *grouped["inputs_embeds"].shape[1:])
    torch.testing.assert_close(pixels[0], batch["pixel_values"])
    assert (pixels[1] != batch["pixel_values"]).float().mean() > 0.99  # the image masked: noise
    torch.testing.assert_close(pixels[2], batch["pixel_values"])
    torch.testing.assert_close(embeds[1], embeds[0])  # masking the image leaves the text alone
    assert torch.equal((embeds[2] != embeds[0]).any(-1), batch["modality_ids"] == 1)
    out = model(**batch)
    out.loss.backward()
    assert out.expert_weights.shape == (4, 4) and out.interaction_losses.shape == (4,)
    assert model.reweighting.net[1].weight.grad.abs().sum() > 0


def test_i2moe_on_the_vilt_route_end_to_end(tmp_path):
    out = tmp_path / "vilt"
    train(["--preset", "demo-vision", "--method", "i2moe", "--unimodal_backbone", "tiny-bert", "--output_dir",
           str(out), *SHRINK[:-2]])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["experts"] == ["uniqueness_image", "uniqueness_text", "synergy", "redundancy"]
    assert json.loads((out / "config.json").read_text())["modalities"] == ["image", "text"]


# ------------------------------------------------------------------------------ multimodal LLMs (LLaVA, BLIP-2)
VLM_MODALITIES = ["image", "caption", "text"]


def _vlm_collator(family: str, **kwargs):
    from mmoe.data.modalities import MultimodalModalityCollator
    from mmoe.testing_vision import tiny_vlm_processor

    kwargs = {"text_template": "{caption} | {text}", "max_length": 32, **kwargs}
    return MultimodalModalityCollator(tiny_vlm_processor(family), image_column="image", modalities=VLM_MODALITIES,
                                      **kwargs)


def _vlm_rows(n: int = 4) -> list[dict]:
    from mmoe.testing_vision import tiny_image_text_dataset

    return [dict(row) for row in tiny_image_text_dataset(n)]


@pytest.mark.parametrize("family", ["llava", "blip-2"])
def test_multimodal_llm_spans_are_the_fields_text_after_the_image_tokens_expand(family):
    from mmoe.testing_vision import BLIP2_NUM_QUERY_TOKENS, IMAGE_TOKEN, TINY_IMAGE_SIZE, TINY_PATCH_SIZE

    collator, rows = _vlm_collator(family), _vlm_rows()
    batch = collator(rows)
    tokenizer = collator._tokenizer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    expanded = (TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2 if family == "llava" else BLIP2_NUM_QUERY_TOKENS
    assert batch["modality_ids"].shape == batch["input_ids"].shape
    for row, ids, modality in zip(rows, batch["input_ids"], batch["modality_ids"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        # independent of the alignment: each modality's tokens are its column's text, tokenized on its own
        for index, name in enumerate(VLM_MODALITIES[1:], start=1):
            assert [t for t, m in zip(tokens, modality.tolist()) if m == index] == tokenizer.tokenize(row[name])
        # the image modality is exactly the processor's expanded placeholder tokens
        assert torch.equal(modality == 0, ids == image_id) and int((ids == image_id).sum()) == expanded
        assert {t for t, m in zip(tokens, modality.tolist()) if m == -1} <= {"[CLS]", "[SEP]", "[PAD]", "|"}


def test_llava_spans_with_a_chat_prompt_and_truncated_text():
    collator = _vlm_collator("llava", prompt_template="USER: {image_token}\n{text} ASSISTANT:", max_length=8)
    rows = _vlm_rows(2)
    batch = collator(rows)
    tokenizer = collator._tokenizer
    for row, ids, modality in zip(rows, batch["input_ids"], batch["modality_ids"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        by_modality = {name: tokenizer.convert_tokens_to_string(
            [t for t, m in zip(tokens, modality.tolist()) if m == index]) for index, name in enumerate(VLM_MODALITIES)}
        assert by_modality["caption"] == row["caption"]  # 6 tokens, "|" and the first token of the text fit in 8
        assert by_modality["text"] == row["text"].split()[0]
        # the prompt's own words around the text belong to no modality
        outside = tokenizer.convert_tokens_to_string([t for t, m in zip(tokens, modality.tolist()) if m == -1])
        assert outside.startswith("[CLS] user :") and outside.endswith("assistant : [SEP]")


def test_llava_masking_changes_exactly_the_text_positions_and_the_image_at_its_pixels():
    from mmoe.testing_vision import tiny_vlm_config

    torch.manual_seed(0)
    config = I2MoEConfig(backbone_config=tiny_vlm_config("llava"), num_labels=2, modalities=VLM_MODALITIES,
                         interaction_loss_weight=0.5)
    model = I2MoEForSequenceClassification(config).train()
    batch = _vlm_collator("llava")(_vlm_rows())
    inputs = model.mmoe.backbone_inputs({k: v for k, v in batch.items() if k not in ("labels", "modality_ids")})
    grouped = model._grouped_inputs(inputs, batch["modality_ids"], [None, 0, 1, 2], batch_size=4)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    groups = grouped["inputs_embeds"].view(4, *embeds.shape)
    pixels = grouped["pixel_values"].view(4, *batch["pixel_values"].shape)
    torch.testing.assert_close(groups[0], embeds)
    torch.testing.assert_close(groups[1], embeds)  # masking the image leaves every embedding alone ...
    assert (pixels[1] != batch["pixel_values"]).float().mean() > 0.99  # ... and replaces its pixels with noise
    for modality in (1, 2):  # masking a text column changes exactly its positions, never the pixels
        assert torch.equal((groups[modality + 1] != embeds).any(-1), batch["modality_ids"] == modality)
        torch.testing.assert_close(pixels[modality + 1], batch["pixel_values"])
    out = model(**batch)  # LLaVA finds its image placeholders in the masked inputs_embeds
    out.loss.backward()
    assert out.expert_weights.shape == (4, 5) and out.interaction_losses.shape == (5,)
    assert torch.isfinite(out.loss) and model.reweighting.net[1].weight.grad.abs().sum() > 0


def test_blip2_is_refused_when_its_text_must_be_masked(tmp_path):
    from mmoe.testing_vision import save_tiny_vlm, tiny_vlm_config
    from mmoe.training.validation import ArgumentsError

    def blip2(weight):
        config = I2MoEConfig(backbone_config=tiny_vlm_config("blip-2"), num_labels=2, modalities=VLM_MODALITIES,
                             interaction_loss_weight=weight)
        return I2MoEForSequenceClassification(config).train()

    with pytest.raises(ValueError, match="takes no `inputs_embeds`"):
        blip2(0.5)
    out = blip2(0.0)(**_vlm_collator("blip-2")(_vlm_rows()))  # no masked passes: BLIP-2 trains
    assert out.expert_weights.shape == (4, 5) and out.interaction_loss is None
    backbone = save_tiny_vlm(tmp_path / "tiny-blip-2", "blip-2")
    with pytest.raises(ArgumentsError, match="takes no `inputs_embeds`"):
        train(["--preset", "demo-vision", "--backbone", str(backbone), "--method", "i2moe", "--unimodal_backbone",
               "tiny-bert", "--output_dir", str(tmp_path / "blip2"), *SHRINK[:-2]])
    assert not (tmp_path / "blip2" / "categorize").exists()


def test_i2moe_on_the_llava_route_end_to_end(tmp_path):
    out = tmp_path / "llava"
    train(["--preset", "demo-vision", "--backbone", "tiny-llava", "--method", "i2moe", "--unimodal_backbone",
           "tiny-bert", "--output_dir", str(out), "--synthetic_num_train", "24", "--synthetic_num_validation", "12",
           "--synthetic_num_test", "12", "--max_steps", "1", "--num_folds", "2", "--disable_tqdm", "true"])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["method"] == "i2moe"
    assert saved["experts"] == ["uniqueness_image", "uniqueness_text", "synergy", "redundancy"]
    assert sum(saved["interpretation"]["mean_weights"].values()) == pytest.approx(1.0, abs=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["modalities"] == ["image", "text"] and config["backbone_config"]["model_type"] == "llava"


def test_activation_checkpointing_gives_the_same_gradients():
    batch = _batch()
    grads = []
    for checkpointing in (False, True):
        model = _model().train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(3)  # the same random vectors for the masked modalities
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
