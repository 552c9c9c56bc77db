#!/usr/bin/env python
"""Run one workflow step: give it its own GPU(s), its thread count, and record provenance.

Every rule of the Snakefile calls its script through this wrapper:

    python scripts/run_step.py --gpus 1 --threads 8 --provenance OUT/provenance/pretrain.json \
        -- python scripts/pretrain.py --config ... --out ...

- `--gpus N` locks N free devices (featnorm.workflow.gpu) and runs the command with
  CUDA_VISIBLE_DEVICES set to them, so concurrent jobs never share a GPU. Without GPUs on
  the machine the command runs on the CPU unchanged.
- `--threads N` sets OMP_NUM_THREADS / MKL_NUM_THREADS (torch's CPU thread pools).
- SIGTERM and SIGINT are passed on to the command (the trainer checkpoints on them), and the
  wrapper exits with the command's status.
- After success, `--provenance FILE` gets package versions, the git commit, the command,
  the devices and the wall time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "lib"))

from featnorm.workflow import gpu, provenance  # noqa: E402


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("run_step.py: put the command after `--`, e.g. run_step.py -- python scripts/x.py")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to lock for the command (default 0)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: leave as is)")
    parser.add_argument("--provenance", type=Path, help="JSON file written after the command succeeds")
    parser.add_argument("--step", default="", help="name of the step, recorded in the provenance")
    parser.add_argument("--require", type=Path, action="append", default=[],
                        help="a file the command must leave behind; if missing after exit 0 (e.g. the "
                             "trainer stopped by SIGTERM after checkpointing), exit 1 without provenance")
    parser.add_argument("--gpu-timeout", type=float, default=None, help="seconds to wait for free GPUs (default: forever)")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("no command after `--`")
    return args, command


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    # Idle OpenMP threads sleep instead of spinning: when jobs share the cores (Snakemake runs
    # several at once), spinning threads steal them (measured: a demo depth probe took 36 s
    # instead of 12 s under load). Export OMP_WAIT_POLICY=ACTIVE to override.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.threads > 0:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(args.threads)
    lease = gpu.acquire(args.gpus, timeout=args.gpu_timeout)
    if lease.devices:
        env["CUDA_VISIBLE_DEVICES"] = lease.cuda_visible_devices
        print(f"run_step: CUDA_VISIBLE_DEVICES={lease.cuda_visible_devices}", file=sys.stderr, flush=True)
    start = time.time()
    with lease:
        proc = subprocess.Popen(command, env=env)

        def forward(signum, _frame):
            proc.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        returncode = proc.wait()
    if returncode != 0:
        return returncode if returncode > 0 else 128 - returncode
    missing = [str(p) for p in args.require if not p.exists()]
    if missing:
        print(f"run_step: the command exited 0 but did not write {', '.join(missing)} "
              "(stopped early? run the workflow again to resume)", file=sys.stderr)
        return 1
    if args.provenance is not None:
        provenance.write(
            args.provenance,
            provenance.collect(
                REPO,
                step=args.step,
                command=command,
                devices=lease.devices,
                threads=args.threads,
                started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                wall_seconds=round(time.time() - start, 3),
            ),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
