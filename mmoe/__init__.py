"""mmoe: mixtures of multimodal interaction experts for Hugging Face ``transformers``."""

from .configuration_mmoe import DEFAULT_EXPERTS, FUSION_METHODS, MMoEConfig
from .modeling_mmoe import (
    MMoEForSequenceClassification,
    MMoEModel,
    MMoEModelOutput,
    MMoEPreTrainedModel,
    MMoESequenceClassifierOutput,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EXPERTS",
    "FUSION_METHODS",
    "MMoEConfig",
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
