"""Unimodal predictions, source 1: released predictions joined by id.

The reading itself lives in :mod:`mmoe.data.predictions` (dataset builders such as MUStARD's attach released
predictions while loading, and ``data/`` may not import ``training/``); this module re-exports it so that the three
sources sit side by side here.
"""

from __future__ import annotations

from ...data.predictions import (
    add_precomputed_predictions,
    balance_binary_predictions,
    confidence_from_probabilities,
    read_prediction_file,
)

__all__ = [
    "add_precomputed_predictions",
    "balance_binary_predictions",
    "confidence_from_probabilities",
    "read_prediction_file",
]
