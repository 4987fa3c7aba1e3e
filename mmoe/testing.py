"""Tiny backbones built from configs, for tests, smoke runs and examples that must not download anything.

Every model here is randomly initialised; the tokenizer is a WordPiece vocabulary of common words plus
single characters, so any lowercase English text tokenizes without unknown tokens.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, BertTokenizer, PreTrainedConfig

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "the a an is are was of to and in on it this that what with for not no yes very so just "
    "day sunny snowy rainy warm cold hot freezing spring winter summer loving love great lovely "
    "photo picture image street beach park dog cat man woman person sky sun snow rain tree house "
    "happy sad smiling crying weather nice terrible perfect wonderful awful sarcastic funny answer "
    "text caption context utterance question label true false red blue green dark bright"
).split()


def tiny_tokenizer() -> BertTokenizer:
    """A small uncased WordPiece tokenizer (~200 tokens) that covers any lowercase ASCII text."""
    vocab: list[str] = list(_SPECIAL_TOKENS)
    pieces = _WORDS + list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    pieces += ["##" + c for c in string.ascii_lowercase + string.digits]
    for piece in pieces:
        if piece not in vocab:
            vocab.append(piece)
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


TINY_VOCAB_SIZE = len(tiny_tokenizer())


def tiny_backbone_config(family: str = "bert", vocab_size: int | None = None) -> PreTrainedConfig:
    """A randomly initialisable config of a few thousand parameters.

    Args:
        family: ``"bert"`` (encoder), ``"qwen2"`` or ``"llama"`` (decoder LLMs).
        vocab_size: defaults to the size of :func:`tiny_tokenizer`.
    """
    vocab_size = vocab_size or TINY_VOCAB_SIZE
    if family == "bert":
        return AutoConfig.for_model(
            "bert",
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            pad_token_id=0,
        )
    if family in ("qwen2", "llama"):
        return AutoConfig.for_model(
            family,
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            tie_word_embeddings=False,
        )
    raise ValueError(f"tiny_backbone_config: unknown family {family!r}; use 'bert', 'qwen2' or 'llama'.")


def save_tiny_backbone(path: str | Path, family: str = "bert", seed: int = 0) -> Path:
    """Write a random tiny ``AutoModel`` backbone and its tokenizer to ``path``; return ``path``.

    The folder loads with ``AutoModel.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``,
    exactly like a downloaded checkpoint.
    """
    path = Path(path)
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_backbone_config(family))
    model.save_pretrained(path)
    tokenizer = tiny_tokenizer()
    if family != "bert":
        # Decoder LLMs pool the last non-padding token, which left padding keeps at the end. init_kwargs is
        # what save_pretrained writes; the attribute alone would not survive a reload.
        tokenizer.padding_side = "left"
        tokenizer.init_kwargs["padding_side"] = "left"
    tokenizer.save_pretrained(path)
    return path


def randomize_lora_weights(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Give every LoRA ``B`` matrix random values.

    peft starts ``lora_B`` at zero, so every fresh expert computes exactly the backbone's function; tests that
    must tell experts apart (fusion, mixed-adapter batches, reloading) randomize them first.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
