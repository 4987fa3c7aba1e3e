"""Unimodal predictions for MMoE step 1, from three sources.

Every source adds the same columns for one modality, named after ``prefix`` (``"text"`` or ``"vision"``):

* ``{prefix}_prediction`` (int): the predicted label id;
* ``{prefix}_confidence`` (float): top-1 minus top-2 probability, i.e. ``|p(yes) - p(no)|`` for two classes;
* ``{prefix}_probs`` (list of float): the probability of every label id, in label-id order;
* ``{prefix}_fold`` (int, cross-fitting only): the fold whose model predicted the row (``-1``: fold ensemble).

Sources:

1. :func:`add_precomputed_predictions`: released predictions, e.g. the MMoE authors'
   ``{id: {"logits": {"Yes": p, "No": p}, "pred": 0|1, "gth": 0|1}}`` files.
2. :func:`predict_with_prompted_model`: a causal LM given only the text, or a vision-language model given
   only the image, few-shot prompted with a yes/no question; the next-token probabilities of the label
   words give the prediction and the confidence.
3. :func:`cross_fit_predictions`: a classifier fine-tuned with the ``Trainer`` on one modality, with K-fold
   cross-fitting so that no training row is predicted by a model that saw it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from .runtime import to_device

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
DEFAULT_QUESTION = "Is the speaker being sarcastic?"
DEFAULT_INSTRUCTION = "Answer the question with one word: {labels}."


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


def confidence_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row: ``[N, C]`` → ``[N]`` (``|p1 - p0|`` when ``C == 2``)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must have shape [N, C] with C >= 2, got {probs.shape}.")
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _set_columns(dataset: Dataset, columns: Mapping[str, Sequence[Any]]) -> Dataset:
    """Add (or replace) whole columns of ``dataset``."""
    existing = [name for name in columns if name in dataset.column_names]
    if existing:
        logger.info("Replacing existing column(s) %s.", existing)
        dataset = dataset.remove_columns(existing)
    for name, values in columns.items():
        dataset = dataset.add_column(name, list(values))
    return dataset


def _prediction_columns(prefix: str, probs: np.ndarray, predictions: np.ndarray | None = None) -> dict[str, list]:
    """``{prefix}_prediction/_confidence/_probs`` from probabilities ``[N, C]`` (argmax unless given)."""
    probs = np.asarray(probs, dtype=np.float64)
    if predictions is None:
        predictions = probs.argmax(axis=1)
    return {
        f"{prefix}_prediction": [int(p) for p in predictions],
        f"{prefix}_confidence": confidence_from_probabilities(probs).tolist(),
        f"{prefix}_probs": probs.tolist(),
    }


def _check_dataset(dataset: Dataset, columns: Sequence[str], what: str) -> None:
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{what}: expected a datasets.Dataset, got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise ValueError(f"{what}: the dataset is empty.")
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not found; the dataset has {dataset.column_names}.")


# ---------------------------------------------------------------------------------------------------------------
# 1. Precomputed predictions
# ---------------------------------------------------------------------------------------------------------------


def read_prediction_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read released predictions: a JSON object ``{id: record}`` or JSON lines with an ``id``/``image_id`` key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        key = next((k for k in ("id", "image_id", "image") if records and k in records[0]), None)
        if key is None:
            raise ValueError(f"{path}: JSON lines need an 'id', 'image_id' or 'image' key per line.")
        return {str(r[key]): r for r in records}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{id: record}}, got {type(data).__name__}.")
    return {str(k): v for k, v in data.items()}


def add_precomputed_predictions(
    dataset: Dataset,
    predictions: Mapping[str, Mapping[str, Any]] | str | Path,
    *,
    prefix: str = "text",
    id_column: str = "id",
    label_words: Sequence[str] = ("No", "Yes"),
    probabilities_key: str = "logits",
    prediction_key: str | None = "pred",
) -> Dataset:
    """Join released unimodal predictions onto ``dataset`` by id.

    Args:
        predictions: ``{id: {probabilities_key: {label_word: p, ...}, prediction_key: label_id}}`` or a path
            to such a JSON (or JSON lines) file; the MMoE authors' format.
        prefix: column prefix, ``"text"`` or ``"vision"``.
        label_words: the key of each label id in the probability dict (``label_words[i]`` ↔ label ``i``).
        prediction_key: field holding the released prediction. It is used as is (the authors' vision
            predictions are rebalanced, see :func:`balance_binary_predictions`, so they are not always the
            argmax); ``None`` or a record without it falls back to the argmax of the probabilities.

    The probabilities are kept as released (they need not sum to 1); the confidence is their top-1 minus
    top-2 difference, ``|p(yes) - p(no)|``. Missing ids raise ``ValueError`` naming them.
    """
    what = "add_precomputed_predictions"
    _check_dataset(dataset, [id_column], what)
    if not isinstance(predictions, Mapping):
        predictions = read_prediction_file(predictions)
    ids = [str(i) for i in dataset[id_column]]
    missing = [i for i in ids if i not in predictions]
    if missing:
        raise ValueError(
            f"{what}: {len(missing)} id(s) have no {prefix} prediction, e.g. {missing[:5]}; "
            "the prediction file must cover every row."
        )
    probs, preds = [], []
    for i in ids:
        record = predictions[i]
        scores = record.get(probabilities_key) or {}
        absent = [w for w in label_words if w not in scores]
        if absent:
            raise ValueError(f"{what}: the {prefix} prediction of id {i!r} lacks {probabilities_key}{absent}.")
        probs.append([float(scores[w]) for w in label_words])
        pred = record.get(prediction_key) if prediction_key else None
        preds.append(int(np.argmax(probs[-1])) if pred is None else int(pred))
    bad = [(i, p) for i, p in zip(ids, preds) if not 0 <= p < len(label_words)]
    if bad:
        raise ValueError(f"{what}: {prefix} predictions outside 0..{len(label_words) - 1}, e.g. {bad[:3]}.")
    return _set_columns(dataset, _prediction_columns(prefix, np.asarray(probs), np.asarray(preds)))


def balance_binary_predictions(prob_yes: Sequence[float], prob_no: Sequence[float], min_fraction: float) -> list[int]:
    """The MMoE authors' prediction balancing for one split (reproduces their released vision predictions).

    Predict ``1`` where ``p(yes) > p(no)``; if the share of ``1`` is below ``min_fraction`` (or above
    ``1 - min_fraction``), instead predict ``1`` for exactly the ``int(N * min_fraction)``
    (``int(N * (1 - min_fraction))``) rows with the highest ``p(yes)``.
    """
    prob_yes, prob_no = np.asarray(prob_yes, dtype=np.float64), np.asarray(prob_no, dtype=np.float64)
    predictions = (prob_yes > prob_no).astype(int)
    n = predictions.size
    ratio = predictions.mean() if n else 0.0
    if ratio < min_fraction or ratio > 1 - min_fraction:
        n_positive = int(n * (min_fraction if ratio < min_fraction else 1 - min_fraction))
        predictions = np.zeros(n, dtype=int)
        predictions[np.argsort(-prob_yes, kind="stable")[:n_positive]] = 1
    return predictions.tolist()


# ---------------------------------------------------------------------------------------------------------------
# 2. Prompted causal LM / vision-language model
# ---------------------------------------------------------------------------------------------------------------


def _tokenizer_of(tokenizer_or_processor: Any) -> Any:
    return getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)


def label_token_ids(tokenizer: Any, label_words: Sequence[str]) -> list[list[int]]:
    """For each label word, the token ids of its spellings (``"Yes"``, ``" Yes"``, ``"yes"``, ``" yes"``, ...).

    Spellings that are a single token are used; if a word has none, the first token of each spelling. The
    probability of a label is the sum over its ids, so casing and a leading space in the answer do not matter.
    Raises ``ValueError`` when two label words share a token.
    """
    ids_per_label: list[list[int]] = []
    for word in label_words:
        spellings = [
            tokenizer.encode(text, add_special_tokens=False)
            for variant in dict.fromkeys([word, word.lower(), word.capitalize(), word.upper()])
            for text in (variant, " " + variant)
        ]
        spellings = [t for t in spellings if t and t[0] != tokenizer.unk_token_id]
        single = [t for t in spellings if len(t) == 1]
        ids = list(dict.fromkeys(t[0] for t in (single or spellings)))
        if not ids:
            raise ValueError(f"label word {word!r} has no token in the tokenizer's vocabulary.")
        ids_per_label.append(ids)
    for a in range(len(label_words)):
        for b in range(a + 1, len(label_words)):
            shared = set(ids_per_label[a]) & set(ids_per_label[b])
            if shared:
                raise ValueError(
                    f"label words {label_words[a]!r} and {label_words[b]!r} share token(s) {sorted(shared)}; "
                    "choose label words that start differently."
                )
    return ids_per_label


def _appends_special_tokens(tokenizer: Any) -> bool:
    """Whether the tokenizer adds special tokens at the end (BERT's ``[SEP]``), which would hide the answer slot."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    return tokenizer.encode("a")[-len(plain) :] != plain


def _example_label_word(example: Mapping[str, Any], label_words: Sequence[str]) -> str:
    label = example["label"]
    return label_words[label] if isinstance(label, (int, np.integer)) else str(label)


def _text_prompt(text: str, question: str, instruction: str, answer: str | None = None) -> str:
    prompt = f"{instruction}\nText: {text}\nQuestion: {question}\nAnswer:"
    return prompt if answer is None else f"{prompt} {answer}\n\n"


def _uses_chat_template(tokenizer: Any, use_chat_template: bool | None) -> bool:
    if use_chat_template is None:
        return getattr(tokenizer, "chat_template", None) is not None
    return use_chat_template


def build_text_prompt(
    tokenizer: Any,
    text: str,
    question: str,
    label_words: Sequence[str],
    few_shot_examples: Sequence[Mapping[str, Any]] = (),
    use_chat_template: bool | None = None,
) -> str:
    """The prompt whose next token is the answer: few-shot examples (``{"text", "label"}``), then the query.

    With a chat template (used when the tokenizer has one, unless ``use_chat_template=False``) each example is
    a user/assistant turn; otherwise a plain ``Text: … Question: … Answer:`` completion prompt.
    """
    instruction = DEFAULT_INSTRUCTION.format(labels=" or ".join(label_words))
    if not _uses_chat_template(tokenizer, use_chat_template):
        shots = "".join(
            _text_prompt(ex["text"], question, instruction, _example_label_word(ex, label_words))
            for ex in few_shot_examples
        )
        return shots + _text_prompt(text, question, instruction)
    messages: list[dict[str, Any]] = []
    for ex in few_shot_examples:
        messages.append({"role": "user", "content": f"{instruction}\nText: {ex['text']}\nQuestion: {question}"})
        messages.append({"role": "assistant", "content": _example_label_word(ex, label_words)})
    messages.append({"role": "user", "content": f"{instruction}\nText: {text}\nQuestion: {question}"})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_image_prompt(
    processor: Any,
    question: str,
    label_words: Sequence[str],
    few_shot_examples: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Chat prompt for a vision-language processor: one image slot per few-shot example and one for the query."""
    instruction = DEFAULT_INSTRUCTION.format(labels=" or ".join(label_words))
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{instruction}\n{question}"}]}
    messages: list[dict[str, Any]] = []
    for ex in few_shot_examples:
        messages += [
            user,
            {"role": "assistant", "content": [{"type": "text", "text": _example_label_word(ex, label_words)}]},
        ]
    messages.append(user)
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(
            "predict_with_prompted_model(modality='image') needs a processor with a chat template (it places the "
            "image tokens); set `processor.chat_template`."
        )
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@contextmanager
def _right_padding(tokenizer: Any):
    """Temporarily pad on the right (the last real token is then found from the attention mask)."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


@torch.no_grad()
def next_token_label_probabilities(
    model: PreTrainedModel, inputs: Mapping[str, torch.Tensor], label_ids: Sequence[Sequence[int]], normalize: bool
) -> torch.Tensor:
    """Next-token probability of each label after the last real token of each row.

    Args:
        inputs: model inputs; ``input_ids`` and ``attention_mask`` are ``[B, T]`` (right padded).
        label_ids: per label, the token ids whose probabilities are summed.
        normalize: renormalise over the labels so each row sums to 1.

    Returns:
        ``[B, C]`` probabilities.
    """
    logits = model(**inputs).logits  # [B, T, V]
    mask = inputs["attention_mask"]
    last = mask.shape[1] - 1 - mask.flip(-1).float().argmax(-1)  # index of the last 1 in each row, [B]
    next_probs = logits[torch.arange(logits.shape[0]), last].float().softmax(-1)  # [B, V]
    probs = torch.stack([next_probs[:, ids].sum(-1) for ids in label_ids], dim=-1)  # [B, C]
    return probs / probs.sum(-1, keepdim=True).clamp_min(1e-12) if normalize else probs


def predict_with_prompted_model(
    dataset: Dataset,
    model: PreTrainedModel,
    tokenizer_or_processor: Any,
    *,
    modality: str = "text",
    text_column: str = "text",
    image_column: str = "image",
    question: str = DEFAULT_QUESTION,
    label_words: Sequence[str] = ("No", "Yes"),
    few_shot_examples: Sequence[Mapping[str, Any]] = (),
    batch_size: int = 8,
    prefix: str | None = None,
    use_chat_template: bool | None = None,
    normalize: bool = True,
    max_length: int | None = None,
) -> Dataset:
    """Zero/few-shot unimodal predictions from the next-token probabilities of the label words.

    Args:
        dataset: rows to predict.
        model: a causal LM (``modality="text"``) or an image-text-to-text model (``modality="image"``).
        tokenizer_or_processor: its tokenizer, or its processor for images.
        modality: ``"text"`` feeds only ``text_column``; ``"image"`` feeds only ``image_column`` (PIL images).
        question: the yes/no question asked about every row.
        label_words: the answer word of each label id (``label_words[i]`` ↔ label ``i``); matched case- and
            leading-space-insensitively (see :func:`label_token_ids`).
        few_shot_examples: demonstrations, each ``{"text": str, "label": int | str}`` (or ``"image"``).
        batch_size: rows per forward pass; a progress bar runs over batches.
        prefix: output column prefix; defaults to ``"text"`` / ``"vision"`` by modality.
        use_chat_template: text only; ``None`` uses the tokenizer's chat template when it has one.
        normalize: renormalise the label-word probabilities to sum to 1 (otherwise raw vocabulary mass).
        max_length: optional truncation length of the prompts (keep it long enough for the question).

    Returns:
        ``dataset`` with ``{prefix}_prediction``, ``{prefix}_confidence`` and ``{prefix}_probs`` added.
    """
    what = "predict_with_prompted_model"
    if modality not in MODALITIES:
        raise ValueError(f"{what}: unknown modality {modality!r}; use one of {MODALITIES}.")
    column = text_column if modality == "text" else image_column
    _check_dataset(dataset, [column], what)
    if len(label_words) < 2 or batch_size < 1:
        raise ValueError(f"{what}: need at least two label words and batch_size >= 1.")
    prefix = prefix or ("text" if modality == "text" else "vision")
    tokenizer = _tokenizer_of(tokenizer_or_processor)
    label_ids = label_token_ids(tokenizer, label_words)
    model.eval()
    # The prompted model stays where its owner put it (one GPU, or a device_map across several); its inputs go
    # to the device of its embeddings.
    device = model.get_input_embeddings().weight.device
    all_probs: list[torch.Tensor] = []
    with _right_padding(tokenizer):
        for start in tqdm(range(0, len(dataset), batch_size), desc=f"{prefix} prompts", unit="batch"):
            rows = dataset[start : start + batch_size][column]
            inputs = _prompt_inputs(
                tokenizer_or_processor,
                modality,
                rows,
                question,
                label_words,
                few_shot_examples,
                use_chat_template,
                max_length,
            )
            probs = next_token_label_probabilities(model, to_device(inputs, device), label_ids, normalize)
            all_probs.append(to_device(probs, "cpu"))
    probs = torch.cat(all_probs).double().numpy()
    return _set_columns(dataset, _prediction_columns(prefix, probs))


def _prompt_inputs(
    tokenizer_or_processor: Any,
    modality: str,
    rows: list[Any],
    question: str,
    label_words: Sequence[str],
    few_shot_examples: Sequence[Mapping[str, Any]],
    use_chat_template: bool | None,
    max_length: int | None,
) -> Mapping[str, torch.Tensor]:
    """Tokenized (and, for images, processed) prompts for one batch."""
    truncation = {"truncation": True, "max_length": max_length} if max_length else {}
    if modality == "text":
        tokenizer = tokenizer_or_processor
        prompts = [
            build_text_prompt(tokenizer, str(t), question, label_words, few_shot_examples, use_chat_template)
            for t in rows
        ]
        # A chat template writes its own special tokens; a trailing [SEP]/EOS must not follow "Answer:".
        add_special = not _uses_chat_template(tokenizer, use_chat_template) and not _appends_special_tokens(tokenizer)
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special, **truncation)
    processor = tokenizer_or_processor
    prompt = build_image_prompt(processor, question, label_words, few_shot_examples)
    shots = [ex["image"] for ex in few_shot_examples]
    images = [[*shots, image] for image in rows] if shots else list(rows)
    return processor(text=[prompt] * len(rows), images=images, return_tensors="pt", padding=True, **truncation)


# ---------------------------------------------------------------------------------------------------------------
# 3. Trained unimodal classifier with K-fold cross-fitting
# ---------------------------------------------------------------------------------------------------------------


def assign_folds(labels: Sequence[int], num_folds: int, seed: int = 0) -> list[int]:
    """Stratified fold id of every row: within each label, a seeded shuffle dealt round-robin over the folds."""
    if num_folds < 2:
        raise ValueError(f"cross-fitting needs num_folds >= 2, got {num_folds}.")
    labels = np.asarray(labels)
    if labels.size < num_folds:
        raise ValueError(f"cross-fitting: {labels.size} rows cannot fill {num_folds} folds; lower `num_folds`.")
    rng = np.random.default_rng(seed)
    folds = np.empty(labels.size, dtype=int)
    offset = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        folds[rows] = (offset + np.arange(rows.size)) % num_folds
        offset += rows.size  # continue dealing where the previous label stopped, so folds stay equal in size
    return folds.tolist()


def _default_training_args(seed: int, output_dir: str, overrides: Mapping[str, Any] | None) -> TrainingArguments:
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "learning_rate": 5e-5,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "dataloader_pin_memory": torch.cuda.is_available(),
        "seed": seed,
        # MMoE-based classifiers (vision-language backbones) also name `interaction_labels` in forward;
        # the fold models learn and are scored on `labels` only.
        "label_names": ["labels"],
    }
    kwargs.update(overrides or {})
    kwargs["remove_unused_columns"] = False  # the collators below read the raw columns
    return TrainingArguments(**kwargs)


def _text_collator(tokenizer: Any, column: str, label_column: str, max_length: int) -> Callable[[list], dict]:
    def collate(rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = tokenizer(
            [str(r[column]) for r in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        batch["labels"] = torch.tensor([int(r[label_column]) for r in rows])
        return dict(batch)

    return collate


def _image_collator(processor: Any, column: str, label_column: str) -> Callable[[list], dict]:
    def collate(rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = processor(images=[r[column].convert("RGB") for r in rows], return_tensors="pt")
        batch["labels"] = torch.tensor([int(r[label_column]) for r in rows])
        return dict(batch)

    return collate


def _load_classifier(
    model_name_or_path: str, modality: str, num_labels: int, column: str, label_column: str, max_length: int
) -> tuple[PreTrainedModel, Any, Callable[[list], dict]]:
    """A freshly initialised head on the pretrained body, its processing class and a collator."""
    from ..backbone_utils import is_vision_language

    config = AutoConfig.from_pretrained(model_name_or_path)
    if is_vision_language(config):
        return _load_multimodal_view_classifier(model_name_or_path, config, modality, num_labels, column,
                                                label_column, max_length)
    if modality == "text":
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
        )
        if tokenizer.pad_token is None:  # decoder LMs
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer, _text_collator(tokenizer, column, label_column, max_length)
    processor = AutoImageProcessor.from_pretrained(model_name_or_path)
    model = AutoModelForImageClassification.from_pretrained(
        model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
    )
    return model, processor, _image_collator(processor, column, label_column)


def _load_multimodal_view_classifier(
    model_name_or_path: str, config: Any, modality: str, num_labels: int, column: str, label_column: str,
    max_length: int,
) -> tuple[PreTrainedModel, Any, Callable[[list], dict]]:
    """A vision-language backbone (ViLT, LLaVA, BLIP-2) as a unimodal classifier: one LoRA adapter + head
    (a one-expert MMoE model) fed the text-only view (a blank image) or the image-only view (an empty text)."""
    from ..data.multimodal_collator import build_collator, load_processor
    from ..modeling_mmoe import MMoEForSequenceClassification

    model = MMoEForSequenceClassification.from_backbone(model_name_or_path, num_labels=num_labels, experts=["unimodal"])
    model.train_expert("unimodal")
    processor = load_processor(model_name_or_path, config)
    if modality == "text":
        collator = build_collator(processor, config, view="text", text_template="{" + column + "}",
                                  max_length=max_length, label_column=label_column)
    else:
        collator = build_collator(processor, config, view="image", image_column=column, text_template="",
                                  max_length=max_length, label_column=label_column)
    return model, processor, collator


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, dtype=np.float64)).softmax(-1).numpy()


def cross_fit_predictions(
    dataset: Dataset | DatasetDict,
    model_name_or_path: str | Path,
    column: str,
    *,
    label_column: str = "label",
    num_folds: int = 5,
    modality: str = "text",
    training_args: TrainingArguments | Mapping[str, Any] | None = None,
    seed: int = 0,
    prefix: str = "text",
    num_labels: int | None = None,
    train_split: str = "train",
    max_length: int = 256,
) -> Dataset | DatasetDict:
    """Out-of-fold predictions of a classifier fine-tuned on one modality.

    Rows are dealt into ``num_folds`` stratified folds (:func:`assign_folds`). For each fold ``k`` a fresh
    classifier is loaded from ``model_name_or_path`` (``AutoModelForSequenceClassification`` on the text
    column ``column``, or ``AutoModelForImageClassification`` + ``AutoImageProcessor`` on an image column),
    trained with the ``Trainer`` on the rows of the other folds only, and predicts the rows of fold ``k``.
    So every training row is predicted by a model that never saw it; otherwise nearly every point would
    look redundant. For the image-captioned route, pass the caption column with ``modality="text"`` and
    ``prefix="vision"``.

    Args:
        dataset: a ``Dataset`` (cross-fitted), or a ``DatasetDict`` whose ``train_split`` is cross-fitted
            and whose other splits are predicted by the average of the ``num_folds`` fold models
            (``{prefix}_fold = -1``).
        training_args: a ``TrainingArguments`` used for every fold, or a dict of overrides of the defaults
            (3 epochs, batch 16, lr 5e-5, ``report_to="none"``, ``save_strategy="no"``, ``seed``).
            ``remove_unused_columns`` is always turned off (the collators read the raw columns).
        seed: seeds the folds and each fold's head initialisation (``seed + k``).
        num_labels: defaults to the ``ClassLabel`` size, else ``max(label) + 1``.

    Returns:
        The same type, with ``{prefix}_prediction``, ``{prefix}_confidence``, ``{prefix}_probs`` and
        ``{prefix}_fold``.
    """
    what = "cross_fit_predictions"
    if modality not in MODALITIES:
        raise ValueError(f"{what}: unknown modality {modality!r}; use one of {MODALITIES}.")
    others: dict[str, Dataset] = {}
    if isinstance(dataset, DatasetDict):
        if train_split not in dataset:
            raise ValueError(f"{what}: split {train_split!r} not found; the splits are {list(dataset)}.")
        others = {name: split for name, split in dataset.items() if name != train_split}
        train = dataset[train_split]
    else:
        train = dataset
    for split in [train, *others.values()]:
        _check_dataset(split, [column, label_column], what)
    labels = [int(v) for v in train[label_column]]
    if num_labels is None:
        feature = train.features[label_column]
        num_labels = feature.num_classes if isinstance(feature, ClassLabel) else max(labels) + 1
    if min(labels) < 0 or max(labels) >= num_labels:
        raise ValueError(f"{what}: labels must lie in 0..{num_labels - 1}; found {sorted(set(labels))}.")

    folds = np.asarray(assign_folds(labels, num_folds, seed))
    train_probs = np.zeros((len(train), num_labels))
    other_probs = {name: np.zeros((len(split), num_labels)) for name, split in others.items()}
    with tempfile.TemporaryDirectory(prefix="mmoe-crossfit-") as tmp:
        args = training_args
        if not isinstance(args, TrainingArguments):
            args = _default_training_args(seed, tmp, args)
        elif args.remove_unused_columns:
            args = dataclasses.replace(args, remove_unused_columns=False)
        for k in tqdm(range(num_folds), desc=f"{prefix} cross-fitting", unit="fold"):
            trainer = _train_fold(
                train.select(np.flatnonzero(folds != k)),
                model_name_or_path,
                modality,
                num_labels,
                column,
                label_column,
                max_length,
                args,
                seed + k,
            )
            held_out = np.flatnonzero(folds == k)
            train_probs[held_out] = _softmax(trainer.predict(train.select(held_out)).predictions)
            for name, split in others.items():
                other_probs[name] += _softmax(trainer.predict(split).predictions) / num_folds
            del trainer
    result = _set_columns(train, {**_prediction_columns(prefix, train_probs), f"{prefix}_fold": folds.tolist()})
    if not others:
        return result
    out = {train_split: result}
    for name, split in others.items():
        columns = {**_prediction_columns(prefix, other_probs[name]), f"{prefix}_fold": [-1] * len(split)}
        out[name] = _set_columns(split, columns)
    return DatasetDict({name: out[name] for name in dataset})


def _train_fold(
    train_rows: Dataset,
    model_name_or_path: str | Path,
    modality: str,
    num_labels: int,
    column: str,
    label_column: str,
    max_length: int,
    args: TrainingArguments,
    seed: int,
) -> Trainer:
    """Fine-tune a fresh classifier on ``train_rows`` and return its ``Trainer`` (ready for ``predict``)."""
    set_seed(seed)
    model, processing_class, collator = _load_classifier(
        str(model_name_or_path), modality, num_labels, column, label_column, max_length
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_rows, data_collator=collator, processing_class=processing_class
    )
    trainer.train()
    return trainer
