#!/usr/bin/env python
"""Convert a checkpoint of the paper author's reference code into our model.pt.

    convert_reference_checkpoint.py --checkpoint CKPT.pt [--config config.yaml] --out model.pt

The reference writes CKPT.pt (its model, optimizer and counters) and config.yaml into one
folder; --config defaults to that config.yaml. The result is evaluated like any run of
ours (extract_features.py, linear_probe.py, depth_probe.py, lidar.py, the figures).
Settings our model lacks (DiffMoE, ToMe, an MLP predictor input, ...) stop with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.config import ConfigError  # noqa: E402
from featnorm.ijepa.reference_conversion import (  # noqa: E402
    ReferenceConversionError,
    convert_reference,
    load_reference_checkpoint,
)
from featnorm.train.checkpoint import save_atomic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="the reference's checkpoint (.pt)")
    ap.add_argument("--config", default=None, help="its config.yaml (default: beside the checkpoint)")
    ap.add_argument("--out", required=True, help="our model.pt to write")
    ap.add_argument("--name", default="reference", help="run name stored in the config (default: reference)")
    a = ap.parse_args(argv)
    try:
        state, conf, training = load_reference_checkpoint(a.checkpoint, a.config)
        model = convert_reference(state, conf, training, a.name)
    except (ReferenceConversionError, ConfigError) as e:
        print(f"convert_reference_checkpoint.py: {e}", file=sys.stderr)
        return 2
    save_atomic(model, a.out)
    print(json.dumps({"out": a.out, "step": model["step"], "images_seen": model["images_seen"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
