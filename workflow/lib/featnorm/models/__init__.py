"""The encoder (student / EMA teacher) and the predictor."""

from featnorm.models.encoder import Encoder
from featnorm.models.predictor import Predictor

__all__ = ["Encoder", "Predictor"]
