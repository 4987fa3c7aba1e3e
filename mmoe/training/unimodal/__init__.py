"""Unimodal predictions for MMoE step 1, from three sources.

Every source adds the same columns for one modality, named after ``prefix`` (``"text"`` or ``"vision"``):
``{prefix}_prediction``, ``{prefix}_confidence``, ``{prefix}_probs`` and, when cross-fitted, ``{prefix}_fold``
(see :mod:`mmoe.data.predictions`).

Sources, one module each:

1. :mod:`.precomputed` — :func:`add_precomputed_predictions`: released predictions, e.g. the MMoE authors'
   ``{id: {"logits": {"Yes": p, "No": p}, "pred": 0|1, "gth": 0|1}}`` files.
2. :mod:`.prompted` — :func:`predict_with_prompted_model`: a causal LM given only the text, or a vision-language
   model given only the image, few-shot prompted with a yes/no question; the next-token probabilities of the
   label words give the prediction and the confidence.
3. :mod:`.cross_fit` — :func:`cross_fit_predictions`: a classifier fine-tuned with the ``Trainer`` on one
   modality, with K-fold cross-fitting so that no training row is predicted by a model that saw it.
"""

from ...data.predictions import MODALITIES
from .cross_fit import assign_folds, cross_fit_predictions
from .precomputed import (
    add_precomputed_predictions,
    balance_binary_predictions,
    confidence_from_probabilities,
    read_prediction_file,
)
from .prompted import (
    DEFAULT_INSTRUCTION,
    DEFAULT_QUESTION,
    build_image_prompt,
    build_text_prompt,
    label_token_ids,
    next_token_label_probabilities,
    predict_with_prompted_model,
)

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DEFAULT_QUESTION",
    "MODALITIES",
    "add_precomputed_predictions",
    "assign_folds",
    "balance_binary_predictions",
    "build_image_prompt",
    "build_text_prompt",
    "confidence_from_probabilities",
    "cross_fit_predictions",
    "label_token_ids",
    "next_token_label_probabilities",
    "predict_with_prompted_model",
    "read_prediction_file",
]
