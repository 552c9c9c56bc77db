#!/usr/bin/env python
"""The random-init baseline: write the untrained model of a run config as model.pt.

    init_model.py --config RUN.yaml --out results/runs/RUN/model.pt

The model is built exactly as the trainer builds it at step 0 (same construction, same seed:
featnorm.ijepa.run_model.initial_model), so the baseline of seed s equals the starting point
of the trained run of seed s. step and images_seen are 0. No training, no data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.config import ConfigError, load_run_config  # noqa: E402
from featnorm.ijepa.run_model import initial_model, model_file  # noqa: E402
from featnorm.train.checkpoint import save_atomic  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="resolved run YAML (runs/<run>/config.yaml)")
    p.add_argument("--out", required=True, help="model.pt to write")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_run_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_atomic(model_file(initial_model(cfg), cfg, step=0, images_seen=0), args.out)
    print(f"random-init model of {cfg.name} (seed {cfg.seed}) written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
