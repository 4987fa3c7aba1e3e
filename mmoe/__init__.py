"""mmoe: mixtures of multimodal interaction experts for Hugging Face ``transformers``."""

from .configuration_mmoe import DEFAULT_EXPERTS, FUSION_METHODS, MMoEConfig
from .modeling_mmoe import MMoEForSequenceClassification, MMoESequenceClassifierOutput

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EXPERTS",
    "FUSION_METHODS",
    "MMoEConfig",
    "MMoEForSequenceClassification",
    "MMoESequenceClassifierOutput",
    "__version__",
]
