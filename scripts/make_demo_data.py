#!/usr/bin/env python
"""Generate demo data: a structural 10-class image folder or an NYU-style depth .mat."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.data.demo_classification import write_classification_demo  # noqa: E402
from featnorm.data.demo_depth import write_nyu_mat  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kind", choices=["classification", "depth"], required=True)
    ap.add_argument("--out", required=True, help="classification: a directory (gets train/ and val/); depth: the .mat file path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=None, help="train images/frames (default 2000 / 400)")
    ap.add_argument("--val", type=int, default=None, help="val images / test frames (default 500 / 100)")
    ap.add_argument("--height", type=int, default=120, help="depth frames: image height")
    ap.add_argument("--width", type=int, default=160, help="depth frames: image width")
    a = ap.parse_args(argv)
    t = time.time()
    if a.kind == "classification":
        counts = write_classification_demo(a.out, a.seed, a.train or 2000, a.val or 500)
    else:
        counts = write_nyu_mat(a.out, a.seed, a.train or 400, a.val or 100, a.height, a.width)
    print(json.dumps({"kind": a.kind, "out": str(a.out), **counts, "seconds": round(time.time() - t, 1)}))


if __name__ == "__main__":
    main()
