"""mmoe: mixtures of multimodal interaction experts for Hugging Face ``transformers``."""

from . import hub_utils as _hub_utils
from .configuration_mmoe import DEFAULT_EXPERTS, FUSION_METHODS, I2MoEConfig, MixtureConfig, MMoEConfig
from .modeling_i2moe import I2MoEForSequenceClassification, I2MoEModel, I2MoESequenceClassifierOutput
from .modeling_mmoe import (
    MixtureModel,
    MixturePreTrainedModel,
    MMoEForSequenceClassification,
    MMoEModel,
    MMoEModelOutput,
    MMoEPreTrainedModel,
    MMoESequenceClassifierOutput,
)
from .version import __version__

__all__ = [
    "DEFAULT_EXPERTS",
    "FUSION_METHODS",
    "I2MoEConfig",
    "I2MoEForSequenceClassification",
    "I2MoEModel",
    "I2MoESequenceClassifierOutput",
    "MMoEConfig",
    "MixtureConfig",
    "MixtureModel",
    "MixturePreTrainedModel",
    "MMoEForSequenceClassification",
    "MMoEModel",
    "MMoEModelOutput",
    "MMoEPreTrainedModel",
    "MMoESequenceClassifierOutput",
    "__version__",
]

# Local registration: with mmoe installed, Auto* classes load MMoE folders without remote code.
from transformers import AutoConfig as _AutoConfig
from transformers import AutoModel as _AutoModel
from transformers import AutoModelForSequenceClassification as _AutoModelForSequenceClassification

_AutoConfig.register("mmoe", MMoEConfig, exist_ok=True)
_AutoModel.register(MMoEConfig, MMoEModel, exist_ok=True)
_AutoModelForSequenceClassification.register(MMoEConfig, MMoEForSequenceClassification, exist_ok=True)
_AutoConfig.register("i2moe", I2MoEConfig, exist_ok=True)
_AutoModel.register(I2MoEConfig, I2MoEModel, exist_ok=True)
_AutoModelForSequenceClassification.register(I2MoEConfig, I2MoEForSequenceClassification, exist_ok=True)

# The training API. The package namespace re-exports every layer (like transformers' own __init__); importing
# hub_cards also gives MMoETrainer its card writer and publisher.
from . import hub_cards as _hub_cards  # noqa: E402,F401
from .training.arguments import MMoETrainingArguments  # noqa: E402
from .training.trainer import MMoETrainer  # noqa: E402

__all__ += ["MMoETrainer", "MMoETrainingArguments"]

# model.push_to_hub keeps a run's card, plots and reports (modeling_mmoe.py is remote code without publishing logic).
# Set on the common base, so that MMoE's and I2MoE's models both keep them.
MixturePreTrainedModel.hub_publisher = staticmethod(_hub_utils.push_to_hub)
