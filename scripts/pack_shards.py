#!/usr/bin/env python
"""Write WebDataset shards + manifest.json from an image folder, NYU's .mat, or index
existing WebDataset shards (verify keys and counts; nothing re-encoded)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.data.imagefolder import pack_imagefolder  # noqa: E402
from featnorm.data.nyu import pack_nyu_mat  # noqa: E402
from featnorm.data.shards import index_webdataset  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", choices=["imagefolder", "nyu-mat", "webdataset"], required=True)
    ap.add_argument("--input", required=True, help="class-folder root | .mat file | shard dir or brace pattern")
    ap.add_argument("--split", required=True, help="split name (train, val, test); also the shard name prefix")
    ap.add_argument("--out", required=True, help="output directory for shards and manifest.json")
    ap.add_argument("--shard-bytes", type=int, default=1 << 30, help="about this many bytes per shard (default 1 GiB)")
    ap.add_argument("--classes", default=None, help="imagefolder: classes.json to reuse (e.g. the train split's)")
    ap.add_argument("--max-short-side", type=int, default=None, help="imagefolder: downsize so the short side is at most this")
    ap.add_argument("--indices", default=None, help="nyu-mat: JSON list of 0-based frame indices for this split")
    ap.add_argument("--split-file", default=None, help="nyu-mat: HDF5 file with trainNdxs/testNdxs (default: the .mat itself)")
    ap.add_argument("--keys", default="jpg,cls", help="webdataset: keys every sample must have (comma separated)")
    a = ap.parse_args(argv)
    try:
        if a.source == "imagefolder":
            m = pack_imagefolder(a.input, a.out, a.split, a.shard_bytes, a.classes, a.max_short_side)
        elif a.source == "nyu-mat":
            m = pack_nyu_mat(a.input, a.out, a.split, a.shard_bytes, a.indices, a.split_file)
        else:
            m = index_webdataset(a.input, a.out, a.split, [k for k in a.keys.split(",") if k])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"pack_shards.py: {e}")
    print(json.dumps({"out": a.out, "split": a.split, "num_samples": m["num_samples"], "shards": len(m["shards"])}))


if __name__ == "__main__":
    main()
