"""Evaluation of a pretrained checkpoint: feature extraction, linear probe, depth probe, LiDAR.

Never imports `featnorm.train`: a checkpoint is read through `checkpoint_loading`, which only
needs the resolved config saved inside `model.pt` and `featnorm.models`.
"""
