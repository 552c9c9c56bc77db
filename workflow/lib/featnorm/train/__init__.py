"""Pretraining (SPEC section 3): the loop, its schedules, checkpoints and diagnostics.

Modules: `schedule` (learning rate and EMA momentum by step), `checkpoint` (atomic resume
checkpoints, RNG states, config-hash check), `signals` (SIGTERM / SIGINT -> checkpoint and
exit 0), `diagnostics` (train_log.jsonl rows, RankMe, LiDAR, optional TensorBoard / W&B),
`trainer` (`Trainer`: the loop; `model.pt` at the end), `data_source` (the training
pipeline and the run's fixed LiDAR set as a `TrainData`). The command line is
`scripts/pretrain.py`.
"""

from featnorm.train.trainer import NonFiniteLossError, Trainer, TrainData, TrainResult

__all__ = ["NonFiniteLossError", "TrainData", "TrainResult", "Trainer"]
