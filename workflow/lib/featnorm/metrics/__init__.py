"""Representation-quality metrics computed in float64: RankMe and LiDAR."""

from featnorm.metrics.lidar import lidar_score
from featnorm.metrics.rankme import smooth_rank

__all__ = ["lidar_score", "smooth_rank"]
