"""Model cards and Hub publishing for MMoE models.

* :class:`MMoEModelCardData`: what the card shows, read from an output folder or collected while training;
* :class:`ModelCardCallback`: a ``TrainerCallback`` that records hyperparameters and losses of a stage (defined in
  :mod:`mmoe.training.callbacks`, re-exported here);
* :func:`write_model_card`: ``README.md`` (YAML metadata with ``model-index`` + Markdown body) and PNG plots;
* :func:`push_output_dir`: one-commit upload of an output folder to the Hub (``model.push_to_hub`` makes the same
  commit, see :mod:`mmoe.hub_utils`);
* ``mmoe-card`` (:func:`mmoe.hub_cards.cli.main`): regenerate and optionally push the card of a folder.
"""

from ..training.callbacks import ModelCardCallback, non_default_arguments  # re-exported: defined in training/
from ..training.trainer import MMoETrainer
from .card_data import DEFAULT_TAGS, METRICS, MMoEModelCardData, is_hub_model_id
from .citations import CITATIONS, I2MOE_BIBTEX, MMOE_BIBTEX
from .model_card import TEMPLATE_PATH, is_generated_card, render_model_card, write_model_card
from .plots import INTERACTION_F1_PLOT, PLOT_FILES, ROUTER_WEIGHTS_PLOT, write_plots
from .publish import DEFAULT_IGNORE_PATTERNS, UPLOAD_ALLOWLIST, files_to_upload, push_output_dir

# MMoETrainer (training/) writes the card and publishes through these; the card lives a layer above training.
MMoETrainer.card_writer = staticmethod(write_model_card)
MMoETrainer.publisher = staticmethod(push_output_dir)

__all__ = [
    "CITATIONS",
    "DEFAULT_IGNORE_PATTERNS",
    "DEFAULT_TAGS",
    "I2MOE_BIBTEX",
    "INTERACTION_F1_PLOT",
    "METRICS",
    "MMOE_BIBTEX",
    "MMoEModelCardData",
    "ModelCardCallback",
    "PLOT_FILES",
    "ROUTER_WEIGHTS_PLOT",
    "TEMPLATE_PATH",
    "UPLOAD_ALLOWLIST",
    "files_to_upload",
    "is_generated_card",
    "is_hub_model_id",
    "non_default_arguments",
    "push_output_dir",
    "render_model_card",
    "write_model_card",
    "write_plots",
]
