"""Names of the files a run writes into its output folder, and how they are read back.

Defined once: the pipeline and the callbacks write them (``training/``), the model card reads them
(``hub_cards/``, which imports these names from this module). The names of the files that travel with the weights
live in :mod:`mmoe.hub_utils` (``model.push_to_hub`` adds them) and are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..hub_utils import EVAL_RESULTS_FILE, RUN_FILE, TRAINING_LOGS_FILE

CONFIG_FILE = "config.json"


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when the file is missing."""
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    return data


__all__ = ["CONFIG_FILE", "EVAL_RESULTS_FILE", "RUN_FILE", "TRAINING_LOGS_FILE", "read_json"]
