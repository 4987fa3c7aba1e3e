"""Unimodal predictions, source 2: a prompted causal LM (text only) or vision-language model (image only).

The model is few-shot prompted with a yes/no question; the next-token probabilities of the label words give the
prediction and the confidence (columns described in :mod:`mmoe.data.predictions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ...data.predictions import MODALITIES, check_dataset, prediction_columns, set_columns
from ..runtime import to_device

DEFAULT_QUESTION = "Is the speaker being sarcastic?"
DEFAULT_INSTRUCTION = "Answer the question with one word: {labels}."


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
    check_dataset(dataset, [column], what)
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
    return set_columns(dataset, prediction_columns(prefix, probs))


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


