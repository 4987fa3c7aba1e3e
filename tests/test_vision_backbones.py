"""MMoE over vision-language backbones with real (generated) images: ViLT, LLaVA and BLIP-2, all tiny.

Per family: the backbone and processor load offline, LoRA lands on the intended side, every expert trains
(forward + backward, gradients only in that expert), the mixed-adapter batch equals sequential passes, a short
``Trainer`` run, the unimodal views, and save -> reload with remote code (without ``mmoe`` importable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor, Trainer, TrainingArguments

from mmoe import MMoEForSequenceClassification
from mmoe.backbone_utils import default_lora_target_modules, is_vision_language
from mmoe.data.images import prepare_image_dataset
from mmoe.data.multimodal_collator import MultimodalCollator, build_collator, load_processor
from mmoe.testing import randomize_lora_weights
from mmoe.testing_vision import VLM_FAMILIES, save_tiny_vlm, tiny_image_text_dataset

EXPECTED_CLASSES = {
    "vilt": ("ViltModel", "ViltProcessor"),
    "llava": ("LlavaModel", "LlavaProcessor"),
    "blip-2": ("Blip2Model", "Blip2Processor"),
}


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {family: save_tiny_vlm(tmp_path_factory.mktemp(f"tiny-{family}"), family) for family in VLM_FAMILIES}


@pytest.fixture(scope="module")
def image_dataset():
    return prepare_image_dataset(tiny_image_text_dataset(4))


def _model(path: Path, **kwargs) -> MMoEForSequenceClassification:
    torch.manual_seed(0)
    return MMoEForSequenceClassification.from_backbone(str(path), num_labels=2, **kwargs)


def _collator(path: Path, model: MMoEForSequenceClassification, **kwargs) -> MultimodalCollator:
    return build_collator(
        load_processor(path), model.config, image_column="image", interaction_column="interaction", **kwargs
    )



@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_backbone_and_processor_load_offline_and_round_trip(family, vlm_dirs, image_dataset, tmp_path):
    model_class, processor_class = EXPECTED_CLASSES[family]
    assert type(AutoModel.from_pretrained(vlm_dirs[family])).__name__ == model_class
    processor = AutoProcessor.from_pretrained(vlm_dirs[family])
    assert type(processor).__name__ == processor_class
    assert is_vision_language(AutoModel.from_pretrained(vlm_dirs[family]).config)

    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == processor_class
    rows = list(image_dataset)
    first = MultimodalCollator(processor, interaction_column="interaction")(rows)
    second = MultimodalCollator(reloaded, interaction_column="interaction")(rows)
    assert first.keys() == second.keys() and {"input_ids", "attention_mask", "pixel_values"} <= set(first)
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_lora_targets_language_side_by_default(family, vlm_dirs):
    model = _model(vlm_dirs[family])
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_modules() if name.endswith(".lora_A")}
    assert adapted
    if family == "vilt":  # one stream: text and image patches share the adapted attention
        assert all(name.endswith((".query", ".value")) for name in adapted)
        return
    assert all("language_model" in name for name in adapted), sorted(adapted)[:5]
    config = model.config.backbone_config
    with_vision = _model(vlm_dirs[family], lora_target_modules=default_lora_target_modules(config, True))
    adapted_vision = {n.rsplit(".lora_A", 1)[0] for n, _ in with_vision.named_modules() if n.endswith(".lora_A")}
    assert adapted < adapted_vision
    assert any("vision" in name for name in adapted_vision - adapted)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_forward_backward_through_every_expert_and_router(family, vlm_dirs, image_dataset):
    model = _model(vlm_dirs[family]).train()
    batch = _collator(vlm_dirs[family], model)(list(image_dataset))
    for expert in model.experts:
        model.zero_grad(set_to_none=True)
        out = model.train_expert(expert)(**batch)
        assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)
        out.loss.backward()
        with_grad = {name for name, param in model.named_parameters() if param.grad is not None}
        assert with_grad and with_grad <= set(model.expert_parameter_names(expert))
        assert any(".lora_B." in name for name in with_grad)  # gradients reach the adapter, not just the head
        lora_b = [param for name, param in model.named_parameters() if name in with_grad and "lora_B" in name]
        assert all(param.grad.abs().sum() > 0 for param in lora_b)
    model.zero_grad(set_to_none=True)
    out = model.train_router()(**batch)
    out.loss.backward()
    # the router head and the router's own adapter (the default router_input), no expert
    assert {n for n, p in model.named_parameters() if p.grad is not None} == set(model.router_parameter_names())
    assert any("router_adapter" in name for name in model.router_parameter_names())
    out = model.train_mixture()(**batch)
    assert out.expert_logits.shape == (4, 3, 2) and torch.isfinite(out.loss)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_mixed_adapter_batch_equals_sequential_passes(family, vlm_dirs, image_dataset):
    model = _model(vlm_dirs[family]).eval()
    randomize_lora_weights(model)
    batch = _collator(vlm_dirs[family], model)(list(image_dataset))
    batch.pop("labels")
    with torch.no_grad():
        model.config.batched_experts = True
        batched = model(**batch)
        model.config.batched_experts = False
        sequential = model(**batch)
    torch.testing.assert_close(batched.expert_logits, sequential.expert_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.router_weights, sequential.router_weights, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched.expert_logits[:, 0], batched.expert_logits[:, 1])


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_trainer_trains_one_expert(family, vlm_dirs, image_dataset, tmp_path):
    model = _model(vlm_dirs[family]).train_expert("synergy")
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
        report_to="none", remove_unused_columns=False, save_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    collator = _collator(vlm_dirs[family], model)
    trainer = Trainer(model=model, args=args, train_dataset=image_dataset, data_collator=collator)
    result = trainer.train()
    assert result.global_step == 2
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed and changed <= set(model.expert_parameter_names("synergy"))
    assert any(".lora_B.synergy" in name for name in changed)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_unimodal_views(family, vlm_dirs, image_dataset):
    model = _model(vlm_dirs[family]).eval()
    collator = _collator(vlm_dirs[family], model)
    rows = list(image_dataset)
    both, text_only, image_only = collator(rows), collator.with_view("text")(rows), collator.with_view("image")(rows)

    # Text view: the same tokens, a blank image (the normalisation mean: pixel values ~0, equal for every row).
    torch.testing.assert_close(text_only["input_ids"], both["input_ids"])
    assert text_only["pixel_values"].abs().max() < 0.02
    assert not torch.equal(text_only["pixel_values"], both["pixel_values"])
    # Image view: the same pixels, an empty text (only special and image tokens remain).
    torch.testing.assert_close(image_only["pixel_values"], both["pixel_values"])
    empty = collator.with_view("image")([{**rows[0], "text": "something else entirely"}])
    torch.testing.assert_close(empty["input_ids"][0], image_only["input_ids"][0][-empty["input_ids"].shape[1]:])
    assert image_only["attention_mask"].sum() < both["attention_mask"].sum()
    with torch.no_grad():
        for batch in (text_only, image_only):
            assert model(**batch).logits.shape == (4, 2)


def test_save_and_reload_with_remote_code_for_every_family(vlm_dirs, image_dataset, tmp_path):
    expected = {}
    for family in VLM_FAMILIES:
        model = _model(vlm_dirs[family]).eval()
        randomize_lora_weights(model)
        collator = _collator(vlm_dirs[family], model)
        batch = collator(list(image_dataset))
        batch.pop("labels")
        folder = tmp_path / family
        model.save_pretrained(folder)
        load_processor(vlm_dirs[family]).save_pretrained(folder)  # what the pipeline does beside the model
        torch.save(batch, folder / "batch.pt")
        assert type(load_processor(folder)).__name__ == EXPECTED_CLASSES[family][1]  # from the MMoE folder
        with torch.no_grad():
            expected[family] = model(**batch)

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["mmoe"] = None  # make `import mmoe` fail: only the remote code may be used
        import torch
        from transformers import AutoModelForSequenceClassification, AutoProcessor
        results = {{}}
        for family in {list(VLM_FAMILIES)!r}:
            folder = {str(tmp_path)!r} + "/" + family
            model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
            assert "mmoe" not in type(model).__module__.split(".")[0], type(model).__module__
            processor = AutoProcessor.from_pretrained(folder)
            with torch.no_grad():
                out = model(**torch.load(folder + "/batch.pt"))
            results[family] = (type(processor).__name__, out.logits, out.expert_logits, out.router_weights)
        torch.save(results, {str(tmp_path / "out.pt")!r})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for family, (processor_name, logits, expert_logits, router_weights) in torch.load(tmp_path / "out.pt").items():
        assert processor_name == EXPECTED_CLASSES[family][1]
        torch.testing.assert_close(logits, expected[family].logits)
        torch.testing.assert_close(expert_logits, expected[family].expert_logits)
        torch.testing.assert_close(router_weights, expected[family].router_weights)


# ---------------------------------------------------------------------------------------------------- errors
def test_corrupt_image_names_the_row(vlm_dirs, tmp_path):
    from datasets import Dataset

    good, broken = tmp_path / "good.png", tmp_path / "broken.png"
    tiny_image_text_dataset(1)[0]["image"].save(good)
    broken.write_bytes(b"this is not a png")
    dataset = prepare_image_dataset(
        Dataset.from_dict({"text": ["a", "b", "c"], "image": [str(good), str(good), str(broken)], "label": [0, 1, 0]})
    )
    collator = MultimodalCollator(load_processor(vlm_dirs["vilt"]))
    collator(list(dataset.select([0, 1])))
    with pytest.raises(ValueError, match=r"dataset row 2\b.*broken\.png"):
        collator(list(dataset))


def test_text_backbone_refuses_images_and_vlm_refuses_none(vlm_dirs, tiny_bert_dir, image_dataset):
    bert = _model(tiny_bert_dir).eval()
    vilt = _model(vlm_dirs["vilt"]).eval()
    batch = _collator(vlm_dirs["vilt"], vilt)(list(image_dataset))
    with pytest.raises(ValueError, match="text-only model and cannot take `pixel_values`"):
        bert(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="vision-language model and needs `pixel_values`"):
        vilt(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="text-only model, but an image column 'image'"):
        build_collator(load_processor(tiny_bert_dir), bert.config, image_column="image")
    with pytest.raises(ValueError, match="needs an image column"):
        build_collator(load_processor(vlm_dirs["vilt"]), vilt.config)
    with pytest.raises(ValueError, match="needs an image processor"):
        MultimodalCollator(load_processor(tiny_bert_dir))
