#!/usr/bin/env python
"""Print the parameter counts of the I-JEPA model of a run config (default: the paper's ViT-S)."""

from __future__ import annotations

import argparse
import sys

import torch

from featnorm.config import RunConfig, load_run_config
from featnorm.ijepa import IJEPA


def count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(model: IJEPA) -> dict[str, int]:
    """Counts of the student encoder, the predictor and the trainable total (teacher excluded)."""
    return {
        "encoder": count(model.student),
        "predictor": count(model.predictor),
        "trainable": count(model, trainable_only=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="run YAML (defaults + overrides); omitted: the paper's ViT-S defaults")
    args = parser.parse_args(argv)
    cfg = load_run_config(args.config) if args.config else RunConfig()
    with torch.device("meta"):  # shapes only, no memory or init time
        model = IJEPA(cfg.model)
    for name, n in parameter_counts(model).items():
        print(f"{name}: {n:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
