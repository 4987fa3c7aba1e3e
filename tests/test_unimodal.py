"""Unimodal predictions: precomputed, prompted (tiny random LM / VLM) and cross-fitted classifiers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from datasets import Image as ImageFeature
from PIL import Image
from transformers import AutoModelForCausalLM

import mmoe.training.unimodal.cross_fit as cross_fit  # _train_fold is patched where cross_fit_predictions looks it up
from mmoe.testing import tiny_backbone_config, tiny_tokenizer
from mmoe.training.unimodal import (
    DEFAULT_QUESTION,
    add_precomputed_predictions,
    assign_folds,
    balance_binary_predictions,
    build_text_prompt,
    confidence_from_probabilities,
    cross_fit_predictions,
    label_token_ids,
    predict_with_prompted_model,
)

MUSTARD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mustard"
TEXTS = ["loving this sunny day", "what a cold winter", "nice dog in the park", "so sad", "a great day at the beach"]


@pytest.fixture(scope="module")
def tiny_lm() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_backbone_config("qwen2")), tiny_tokenizer()


@pytest.fixture(scope="module")
def text_data() -> Dataset:
    return Dataset.from_dict({"id": [f"r{i}" for i in range(10)], "text": TEXTS * 2, "label": [0, 1] * 5})


def _check_prediction_columns(data: Dataset, prefix: str, num_labels: int = 2) -> np.ndarray:
    probs = np.array(data[f"{prefix}_probs"])
    assert probs.shape == (len(data), num_labels)
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    np.testing.assert_array_equal(data[f"{prefix}_prediction"], probs.argmax(1))
    np.testing.assert_allclose(data[f"{prefix}_confidence"], confidence_from_probabilities(probs))
    return probs


def test_confidence_is_top1_minus_top2() -> None:
    assert confidence_from_probabilities(np.array([[0.2, 0.8], [0.7, 0.3]])) == pytest.approx([0.6, 0.4])
    assert confidence_from_probabilities(np.array([[0.5, 0.3, 0.2]])) == pytest.approx([0.2])
    with pytest.raises(ValueError, match="shape"):
        confidence_from_probabilities(np.array([0.5, 0.5]))


def test_prompted_text_predictions_are_valid_and_batch_independent(tiny_lm, text_data: Dataset) -> None:
    model, _ = tiny_lm
    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "left"  # the predictor pads on the right internally and restores this
    shots = [{"text": "yeah great", "label": 1}, {"text": "nice day", "label": "No"}]
    out = predict_with_prompted_model(text_data, model, tokenizer, few_shot_examples=shots, batch_size=4)
    probs = _check_prediction_columns(out, "text")
    single = predict_with_prompted_model(text_data, model, tokenizer, few_shot_examples=shots, batch_size=1)
    np.testing.assert_allclose(np.array(single["text_probs"]), probs, atol=1e-5)  # padding does not leak
    # Independently: one unpadded prompt at a time, the float64 softmax of the last position's logits, summed per
    # label word's token ids and renormalised over the two labels.
    label_ids = label_token_ids(tokenizer, ("No", "Yes"))
    expected = []
    for text in text_data["text"]:
        prompt = build_text_prompt(tokenizer, text, DEFAULT_QUESTION, ("No", "Yes"), shots)
        with torch.no_grad():
            logits = model(**tokenizer(prompt, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
        vocab_probs = torch.softmax(logits.double(), -1).numpy()
        label_probs = np.array([vocab_probs[ids].sum() for ids in label_ids])
        expected.append(label_probs / label_probs.sum())
    np.testing.assert_allclose(probs, np.array(expected), atol=1e-5)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "[PAD]"  # tokenizer restored


def test_prompted_with_chat_template_and_raw_probabilities(tiny_lm, text_data: Dataset) -> None:
    model, _ = tiny_lm
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    out = predict_with_prompted_model(text_data.select(range(3)), model, tokenizer, normalize=False, prefix="t")
    probs = np.array(out["t_probs"])
    assert (probs > 0).all() and (probs.sum(1) < 1).all()


def test_label_words_must_tokenize_apart() -> None:
    tokenizer = tiny_tokenizer()
    assert label_token_ids(tokenizer, ("No", "Yes")) == [
        [tokenizer.convert_tokens_to_ids("no")],
        [tokenizer.convert_tokens_to_ids("yes")],
    ]
    with pytest.raises(ValueError, match="share token"):
        label_token_ids(tokenizer, ("yes", "YES please"))
    assert label_token_ids(tokenizer, ("cold", "sunny")) == [
        [tokenizer.convert_tokens_to_ids("cold")],
        [tokenizer.convert_tokens_to_ids("sunny")],
    ]


def test_prompted_rejects_bad_inputs(tiny_lm, text_data: Dataset) -> None:
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="'utterance'"):
        predict_with_prompted_model(text_data, model, tokenizer, text_column="utterance")
    with pytest.raises(ValueError, match="modality"):
        predict_with_prompted_model(text_data, model, tokenizer, modality="audio")
    with pytest.raises(ValueError, match="empty"):
        predict_with_prompted_model(text_data.select([]), model, tokenizer)


def _images(n: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_prompted_vision_language_model() -> None:
    from transformers import LlavaForConditionalGeneration

    from mmoe.testing_vision import tiny_vlm_config, tiny_vlm_processor

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(tiny_vlm_config("llava", text_family="llama"))
    processor = tiny_vlm_processor("llava")
    processor.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    images = _images(5)
    data = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0]}).cast_column("image", ImageFeature())
    out = predict_with_prompted_model(
        data, model, processor, modality="image", batch_size=2, few_shot_examples=[{"image": images[0], "label": 1}]
    )
    _check_prediction_columns(out, "vision")


def test_precomputed_predictions_and_released_vision_balancing() -> None:
    if not (MUSTARD_DIR / "image_only_pred_cogvlm2.json").is_file():
        pytest.skip(f"MUStARD test data not found at {MUSTARD_DIR}.")
    released = json.loads((MUSTARD_DIR / "image_only_pred_cogvlm2.json").read_text())
    train_ids = list(json.loads((MUSTARD_DIR / "mustard_train.json").read_text()))
    data = Dataset.from_dict({"id": train_ids})
    out = add_precomputed_predictions(data, MUSTARD_DIR / "image_only_pred_cogvlm2.json", prefix="vision")
    assert list(out["vision_prediction"]) == [released[i]["pred"] for i in train_ids]
    argmax = add_precomputed_predictions(data, released, prefix="vision", prediction_key=None)
    assert sum(a != b for a, b in zip(argmax["vision_prediction"], out["vision_prediction"])) == 51
    # The released train predictions are the argmax, rebalanced to at most 80 % "Yes" (the authors' code).
    balanced = balance_binary_predictions(
        [released[i]["logits"]["Yes"] for i in train_ids], [released[i]["logits"]["No"] for i in train_ids], 0.2
    )
    assert balanced == [released[i]["pred"] for i in train_ids]
    with pytest.raises(ValueError, match="no vision prediction"):
        add_precomputed_predictions(Dataset.from_dict({"id": ["nope"]}), released, prefix="vision")


def test_assign_folds_is_stratified_and_balanced() -> None:
    labels = [0] * 7 + [1] * 5
    folds = np.array(assign_folds(labels, 3, seed=0))
    assert sorted(np.bincount(folds)) == [4, 4, 4]
    for k in range(3):
        assert set(np.array(labels)[folds == k]) == {0, 1}
    assert assign_folds(labels, 3, seed=0) == folds.tolist()
    with pytest.raises(ValueError, match="num_folds"):
        assign_folds(labels, 1)


def test_cross_fitting_never_predicts_a_row_with_a_model_trained_on_it(
    tiny_bert_dir: Path, text_data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained_on: list[set[str]] = []
    predicted: list[list[str]] = []
    original = cross_fit._train_fold

    def recording_train_fold(train_rows, *args, **kwargs):
        trainer = original(train_rows, *args, **kwargs)
        trained_on.append(set(train_rows["id"]))
        fold_predicted: list[str] = []
        predicted.append(fold_predicted)
        predict = trainer.predict

        def recording_predict(rows, *a, **k):
            fold_predicted.extend(rows["id"])
            return predict(rows, *a, **k)

        trainer.predict = recording_predict
        return trainer

    monkeypatch.setattr(cross_fit, "_train_fold", recording_train_fold)
    splits = DatasetDict(
        {"train": text_data, "validation": text_data.select(range(3)).map(lambda r: {"id": "v-" + r["id"]})}
    )
    out = cross_fit_predictions(
        splits, tiny_bert_dir, "text", num_folds=3, training_args={"max_steps": 2, "disable_tqdm": True}
    )
    train = out["train"]
    _check_prediction_columns(train, "text")
    _check_prediction_columns(out["validation"], "text")
    assert set(out["validation"]["text_fold"]) == {-1}
    fold_of = dict(zip(train["id"], train["text_fold"]))
    assert len(trained_on) == 3
    for k in range(3):
        train_ids_predicted = [i for i in predicted[k] if not i.startswith("v-")]
        assert not trained_on[k] & set(train_ids_predicted)  # by construction: never predicted by its own model
        assert {i for i, f in fold_of.items() if f == k} == set(train_ids_predicted)
        assert trained_on[k] == {i for i, f in fold_of.items() if f != k}


def test_cross_fitting_a_decoder_classifier_on_a_caption_column(tiny_qwen2_dir: Path) -> None:
    data = Dataset.from_dict({"caption": TEXTS * 2, "label": [0, 1, 2, 0, 1] * 2})
    out = cross_fit_predictions(
        data,
        tiny_qwen2_dir,
        "caption",
        num_folds=2,
        prefix="vision",
        training_args={"max_steps": 1, "disable_tqdm": True},
    )
    _check_prediction_columns(out, "vision", num_labels=3)
    assert sorted(set(out["vision_fold"])) == [0, 1]


def test_cross_fitting_an_image_classifier(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    ViTForImageClassification(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    data = Dataset.from_dict({"image": _images(6), "label": [0, 1] * 3}).cast_column("image", ImageFeature())
    out = cross_fit_predictions(
        data,
        tmp_path,
        "image",
        modality="image",
        prefix="vision",
        num_folds=2,
        training_args={"max_steps": 1, "disable_tqdm": True, "per_device_train_batch_size": 2},
    )
    _check_prediction_columns(out, "vision")


def test_cross_fitting_rejects_bad_inputs(tiny_bert_dir: Path, text_data: Dataset) -> None:
    with pytest.raises(ValueError, match="'caption'"):
        cross_fit_predictions(text_data, tiny_bert_dir, "caption")
    with pytest.raises(ValueError, match="labels must lie"):
        cross_fit_predictions(text_data, tiny_bert_dir, "text", num_labels=1)
    with pytest.raises(ValueError, match="split 'train' not found"):
        cross_fit_predictions(DatasetDict({"dev": text_data}), tiny_bert_dir, "text")
    with pytest.raises(ValueError, match="cannot fill"):
        cross_fit_predictions(text_data.select(range(2)), tiny_bert_dir, "text", num_folds=3)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_cross_fitting_a_vision_language_backbone_on_one_view(tmp_path: Path, modality: str) -> None:
    """A ViLT classifier sees the text with a blank image, or the image with an empty text (issue 5's views)."""
    from mmoe.testing_vision import save_tiny_vlm, tiny_image_text_dataset

    backbone = save_tiny_vlm(tmp_path / "vilt", "vilt")
    data = tiny_image_text_dataset(n=8).remove_columns("interaction")
    column = "text" if modality == "text" else "image"
    out = cross_fit_predictions(
        data, backbone, column, modality=modality, num_folds=2, prefix=modality,
        training_args={"max_steps": 1, "disable_tqdm": True}, max_length=16,
    )
    _check_prediction_columns(out, modality)
    assert sorted(set(out[f"{modality}_fold"])) == [0, 1]
