#!/usr/bin/env python
"""Download the paper author's published WebDataset shards (resume, retries, verification).

Files go to OUT/<split>/; afterwards every shard is read once to check keys and counts and
OUT/<split>/manifest.json is written (skip with --no-index). The Hugging Face repo names
are in featnorm/data/hf_plan.py (HF_DATASET_REPOS); --repo overrides them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.data import hf_plan  # noqa: E402
from featnorm.data.download import DownloadError, download  # noqa: E402
from featnorm.data.shards import index_webdataset  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", choices=sorted(hf_plan.SHARDS), required=True)
    ap.add_argument("--out", required=True, help="dataset directory; shards land in OUT/<split>/")
    ap.add_argument("--split", action="append", default=None, help="split(s) to fetch (default: all)")
    ap.add_argument("--repo", default=None, help="Hugging Face dataset repo (default from hf_plan.HF_DATASET_REPOS)")
    ap.add_argument("--base-url", default=None, help="fetch <base-url>/<file> instead (a mirror)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N files per split (for trying it out)")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--dry-run", action="store_true", help="print the file URLs and stop")
    ap.add_argument("--no-index", action="store_true", help="do not verify shards / write manifest.json")
    a = ap.parse_args(argv)
    files = hf_plan.plan(a.dataset, a.split, a.repo)
    by_split: dict[str, list] = {}
    for f in files:
        by_split.setdefault(f.split, []).append(f)
    if a.limit is not None:
        by_split = {s: fs[: a.limit] for s, fs in by_split.items()}
    if a.dry_run:
        for fs in by_split.values():
            for f in fs:
                print(f"{a.base_url.rstrip('/')}/{f.name}" if a.base_url else f.url)
        return
    try:
        for split, fs in by_split.items():
            out = Path(a.out) / split
            for f in fs:
                url = f"{a.base_url.rstrip('/')}/{f.name}" if a.base_url else f.url
                download(url, out / f.name, f.size, f.sha256, retries=a.retries)
            if not a.no_index:
                m = index_webdataset([str(out / f.name) for f in fs], out, split, hf_plan.KEYS[a.dataset])
                expected = hf_plan.SAMPLES.get((a.dataset, split))
                if a.limit is None and expected is not None and m["num_samples"] != expected:
                    print(f"warning: {out} holds {m['num_samples']} samples, SPEC says {expected}", file=sys.stderr)
                print(json.dumps({"split": split, "out": str(out), "num_samples": m["num_samples"], "shards": len(fs)}))
    except (DownloadError, ValueError, FileNotFoundError) as e:
        sys.exit(f"download.py: {e}")


if __name__ == "__main__":
    main()
