"""The I-JEPA objective: target normalization, window sampling, the step's loss, the EMA."""

from featnorm.ijepa.ema import ema_update
from featnorm.ijepa.objective import IJEPA, IJEPAOutput, targets_rankme
from featnorm.ijepa.target_norm import TargetNorm
from featnorm.ijepa.window_sampling import (
    gather_windows,
    padding_windows,
    register_window_index,
    register_windows,
    sample_windows,
    windows_per_copy,
)

__all__ = [
    "IJEPA",
    "IJEPAOutput",
    "TargetNorm",
    "ema_update",
    "gather_windows",
    "padding_windows",
    "register_window_index",
    "register_windows",
    "sample_windows",
    "targets_rankme",
    "windows_per_copy",
]
