#!/usr/bin/env python
"""Write one run's resolved config (defaults + overrides, validated) as YAML.

The workflow passes the resolved config as JSON (the rule's params), so that changing a run's
settings reruns that run's chain and nothing else:

    python scripts/write_run_config.py --json '{"name": "tanh", "model": {...}}' --out runs/tanh/config.yaml

The file is what `scripts/pretrain.py --config` reads; it is also the record of the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow" / "lib"))

from featnorm.config import ConfigError, run_config_from_dict, save_run_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="the run config (a nested mapping) as JSON")
    parser.add_argument("--out", required=True, type=Path, help="YAML file to write")
    args = parser.parse_args(argv)
    try:
        cfg = run_config_from_dict(json.loads(args.json))
    except (json.JSONDecodeError, ConfigError) as e:
        print(f"write_run_config.py: {e}", file=sys.stderr)
        return 2
    save_run_config(cfg, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
