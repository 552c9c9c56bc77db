#!/usr/bin/env python
"""The prepared device check of issue 13: four parts on one GPU, each timed and bounded.

    bash benchmarks/device_check.sh OUT [--cpu-smoke] [--parts abcd] [--budget SECONDS]

  a  tests: `pytest -m "cuda or not slow"` (the fast suite plus the CUDA-only tests)
  b  the paper ViT-S train step at 320 rows in bf16 (64 where 320 runs out of memory):
     eager vs torch.compile, sdpa vs flex: images/s, TFLOP/s, MFU, peak memory
     (benchmarks/train_step.py), and the model FLOPs of the step (--flops-only)
  c  the data pipeline on ImageNet-sized JPEGs with all cores (benchmarks/data_pipeline.py)
  d  the demo workflow end to end (snakemake, config/demo.yaml) into a scratch results dir

Parts run in the order b, a, c, d, each as subprocesses under its own time cap (its share of
what is left of `--budget`, 450 s on a GPU: the whole check ends within 8 minutes), so one
slow part cannot eat the others' time; a part that hits its cap is recorded as a timeout
with what it finished. Writes two files,
OUT/device_check.json (device, versions, every figure of every part) and OUT/device_check.log
(everything the parts printed), and prints a short table. `--cpu-smoke` runs every part on tiny sizes on the
CPU (CI runs it, so the script cannot rot): it checks the machinery, not the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Shares of the budget (seconds; on a GPU 450 s, 8 minutes with start-up and slack). Each part's
# cap is its share of the time still left, so time an early part does not use goes to the later ones.
CAPS = {"gpu": {"b": 185, "a": 135, "c": 35, "d": 95}, "smoke": {"b": 90, "a": 50, "c": 40, "d": 80}}
ORDER = "bacd"  # the paper step first (the figures that matter most), on a machine nothing else runs on
NAMES = {"a": "tests", "b": "train_step", "c": "data_pipeline", "d": "demo_workflow"}


class Log:
    def __init__(self, path: Path):
        self.f = path.open("a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            self.f.write(line.rstrip("\n") + "\n")
            print(line.rstrip("\n"), flush=True)


def run(cmd: list[str], timeout: float, log: Log, env: dict | None = None) -> dict:
    """Run `cmd` in its own process group, its output into the log; on timeout the whole group
    (snakemake's jobs, pytest's workers) is stopped."""
    log(f"$ {' '.join(cmd)}   (cap {timeout:.0f} s)")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def pump():
        for line in proc.stdout:
            log("  " + line.rstrip("\n"))
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5)
    seconds = time.perf_counter() - t0
    log(f"  -> {'TIMEOUT' if timed_out else f'exit {proc.returncode}'} after {seconds:.1f} s")
    return {"rc": None if timed_out else proc.returncode, "timed_out": timed_out, "seconds": round(seconds, 1),
            "tail": lines[-12:], "lines": lines}


def usable_cpus() -> int:
    """CPUs this process may use (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- parts


def junit_counts(xml: Path) -> dict | None:
    """Counts and failed test names of a pytest --junitxml file, None if it is missing or broken."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None][:30]
    return counts


def verbose_counts(lines: list[str]) -> dict:
    """Counts from `pytest -v` lines (`path::test PASSED`), for a run stopped before its JUnit file."""
    found = [m.groups() for m in map(re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)").search, lines) if m]
    status = [s for _, s in found]
    counts = {"passed": status.count("PASSED"), "failures": status.count("FAILED"), "errors": status.count("ERROR"),
              "skipped": status.count("SKIPPED")}
    counts["tests"] = len(found)
    counts["failed_tests"] = [n for n, s in found if s in ("FAILED", "ERROR")]
    counts["finished_before_the_cap"] = [n for n, _ in found]
    return counts


def part_tests(out: Path, cap: float, smoke: bool, log: Log, env: dict) -> dict:
    """The CUDA-only tests first (so that their results survive a slow suite), then the rest of
    `pytest -m "cuda or not slow"`, in parallel where pytest-xdist is installed."""
    t0 = time.perf_counter()
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    workers = []
    if not smoke:
        try:
            import xdist  # noqa: F401

            workers = ["-n", str(min(8, usable_cpus()))]
        except ImportError:
            pass
    res = {"status": "ok"}
    for name, marker, files, share in (("cuda", "cuda", ["tests/test_cuda.py"], 0.55),
                                       ("rest", "not slow and not cuda", ["tests/test_train_flops.py"] if smoke else [], 1.0)):
        xml = out / f"pytest_{name}.xml"
        xml.unlink(missing_ok=True)
        verbose = ["-v"] if name == "cuda" else ["-q"]  # -v: a line per test, so what finished survives a timeout
        cmd = base + verbose + ["-m", marker, f"--junitxml={xml}"] + (workers if name == "rest" else []) + files
        left = cap - (time.perf_counter() - t0)
        r = run(cmd, max(10.0, left * share), log, env)
        counts = junit_counts(xml)
        if counts is None and name == "cuda":
            counts = verbose_counts(r["lines"])
        res[name] = {"command": " ".join(cmd[2:]), **{k: r[k] for k in ("rc", "timed_out", "seconds")}, **(counts or {"tail": r["tail"]})}
        if r["timed_out"]:
            res["status"] = "timeout"
        elif r["rc"] != 0 and res["status"] == "ok":
            res["status"] = "failed"
    for k in ("tests", "passed", "failures", "errors", "skipped"):
        res[k] = sum(res[n].get(k, 0) for n in ("cuda", "rest"))
    return res


def part_train_step(out: Path, cap: float, smoke: bool, log: Log, env: dict) -> dict:
    """The step's FLOPs, then one benchmarks/train_step.py run per configuration, cheapest first;
    each gets an equal share of the time left, so what one leaves unused goes to the next.
    A configuration out of memory at 320 rows is measured again at 64 if time is left."""
    t0 = time.perf_counter()
    script = str(REPO / "benchmarks" / "train_step.py")
    rows = 16 if smoke else 320
    fl = run([sys.executable, script, "--flops-only", "--models", "paper_vits", "--rows", str(rows), "--distinct", "2", "--sizes", "imagenet",
              "--out", str(out / "flops.json")], min(60.0, cap / 4), log, env)
    flops = read_json(out / "flops.json")
    res = {"flops": flops["flops"][0] if flops else None, "flops_run": {k: fl[k] for k in ("rc", "timed_out", "seconds")}}
    if flops:
        res["flops"].pop("per_batch", None)
    if smoke:  # the CPU: the demo model, eager only (compiling takes minutes there; flex cannot train)
        common = ["--device", "cpu", "--precision", "fp32", "--models", "demo", "--steps", "2", "--warmup", "1",
                  "--distinct", "1", "--threads", "2"]
        configs, rows = [("flex", "eager"), ("sdpa", "eager")], 4  # flex is skipped at once on the CPU
    else:
        common = ["--device", "cuda", "--precision", "bf16", "--models", "paper_vits", "--steps", "8", "--warmup", "1",
                  "--distinct", "2", "--threads", "8", "--sizes", "imagenet"]
        configs = [("sdpa", "eager"), ("flex", "eager"), ("sdpa", "compile"), ("flex", "compile")]
    res["results"] = []
    todo = [(b, m, rows) for b, m in configs]
    while todo:
        backend, mode, r_rows = todo.pop(0)
        left = cap - (time.perf_counter() - t0)
        if left < 15:
            res["results"].append({"model": "paper_vits", "attention_backend": backend, "compile": mode == "compile",
                                   "rows_per_step": r_rows, "status": "not run", "reason": "no time left in the part's cap"})
            continue
        share = left / (len(todo) + 1)
        path = out / f"train_step_{backend}_{mode}_{r_rows}.json"
        run([sys.executable, script, *common, "--rows", str(r_rows), "--layouts", "packed", "--backends", backend,
             "--compile-modes", mode, "--timeout", f"{max(10.0, share - 5):.0f}", "--out", str(path)], share, log, env)
        got = read_json(path)
        results = got["results"] if got else [{"attention_backend": backend, "compile": mode == "compile", "rows_per_step": r_rows,
                                               "status": "error", "error": "no JSON written"}]
        res["results"] += results
        oom = any(x["status"] == "error" and "out of memory" in x.get("error", "").lower() for x in results)
        if oom and r_rows == 320:
            todo.append((backend, mode, 64))
    good = [x for x in res["results"] if x["status"] == "ok"]
    res["status"] = "ok" if good and all(x["status"] in ("ok", "skipped") for x in res["results"]) else "partial" if good else "failed"
    return res


def part_data_pipeline(out: Path, cap: float, smoke: bool, log: Log, env: dict) -> dict:
    cpus = usable_cpus()
    workers = "0,1" if smoke else f"1,{max(1, cpus - 1)}"
    args = ["--sets", "imagenet", "--images", "100" if smoke else "3000", "--epochs", "1",
            "--workers", workers, "--decoders", "pil,torchvision", "--no-packing-stats", "--out", str(out / "data_pipeline.json")]
    r = run([sys.executable, str(REPO / "benchmarks" / "data_pipeline.py"), *args], cap, log, env)
    dp = read_json(out / "data_pipeline.json")
    res = {**{k: r[k] for k in ("rc", "timed_out", "seconds")}, "cpus": cpus}
    if dp:
        res["sizing"] = dp.get("sizing")
        res["imagenet"] = dp.get("imagenet")
    res["status"] = "ok" if dp and r["rc"] == 0 else "timeout" if r["timed_out"] else "failed"
    return res


def part_demo(out: Path, cap: float, smoke: bool, log: Log, env: dict, scratch: Path) -> dict:
    try:
        import snakemake  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "snakemake is not installed here: run benchmarks/device_wheels.sh on the "
                                               "workstation and carry .whl (see README, 'Speed')"}
    results = scratch / "demo"
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(usable_cpus()), "--configfile", "config/demo.yaml"]
    if smoke:
        # a cut-down chain: generated images, shards, one short pretraining (the machinery, in seconds)
        import yaml

        cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        cfg["results"] = str(results)
        cfg["datasets"]["imagenet"].update(train=120, val=30)
        cfg["defaults"]["train"].update(steps=3, checkpoint_every=3, rankme_every=0, lidar_every=0)
        # one copy per run (no seeds), so the target below is `runs/tanh`, not `runs/tanh-s0`
        cfg.pop("seeds", None)
        for entry in cfg["runs"].values():
            (entry or {}).pop("seeds", None)
        smoke_cfg = scratch / "demo_smoke.yaml"
        smoke_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [sys.executable, "-m", "snakemake", str(results / "runs" / "tanh" / "model.pt"), "--cores", "2",
               "--configfile", str(smoke_cfg)]
    else:
        cmd += ["--config", f"results={results}"]
    r = run(cmd, cap, log, env)
    res = {"command": " ".join(cmd[3:]), **{k: r[k] for k in ("rc", "timed_out", "seconds")}, "scratch": str(results)}
    done = [m.groups() for m in map(re.compile(r"(\d+) of (\d+) steps").search, r["lines"]) if m]
    if done:
        res["jobs_done"], res["jobs_total"] = int(done[-1][0]), int(done[-1][1])
    summary = results / "paper" / "tables" / "summary.md"
    if summary.is_file():
        res["summary_table"] = summary.read_text()
    res["status"] = "ok" if r["rc"] == 0 else "timeout" if r["timed_out"] else "failed"
    return res


# ----------------------------------------------------------------------------- report


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "cpus": usable_cpus(), "host": platform.node()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count)
    else:
        env["device"] = "cpu: " + (platform.processor() or platform.machine())
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    from featnorm.train.throughput import peak_tflops

    env["peak_tflops"], env["peak_source"] = peak_tflops()
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or None
    except OSError:
        env["git_commit"] = None
    return env


def table(report: dict) -> str:
    lines = [f"device check on {report['environment']['device']} (torch {report['environment']['torch']}), "
             f"{'cpu-smoke' if report['cpu_smoke'] else 'gpu'}: {report['seconds']:.0f} s", ""]
    lines.append(f"{'part':16s} {'status':8s} {'s':>6s}  figures")
    p = report["parts"]
    for key in p:
        r = p[key]
        fig = ""
        if key == "a" and "tests" in r:
            c = r.get("cuda", {})
            fig = (f"{r['passed']} passed, {r['failures'] + r['errors']} failed, {r['skipped']} skipped "
                   f"(CUDA-only: {c.get('passed', 0)} passed, {c.get('failures', 0) + c.get('errors', 0)} failed, {c.get('skipped', 0)} skipped)")
        elif key == "b":
            f = r.get("flops") or {}
            fig = f"{f.get('step_tflop', float('nan')):.3f} TFLOP/step at {f.get('rows_per_step')} rows" if f else ""
        elif key == "c" and r.get("sizing"):
            s = r["sizing"]
            fig = f"per worker {s['per_worker_images_per_cpu_s']} img/CPU-s; workers for {s['target_images_per_s']:.0f} img/s: {s['workers_needed']}"
        elif key == "d" and "jobs_total" in r:
            fig = f"{r['jobs_done']} of {r['jobs_total']} jobs"
        elif r.get("reason"):
            fig = r["reason"]
        lines.append(f"{key} {NAMES[key]:14s} {r['status']:8s} {r.get('part_seconds', 0):6.0f}  {fig}")
    for x in p.get("b", {}).get("results", []):
        what = f"  {x['rows_per_step'] if 'rows_per_step' in x else '':>4} rows {x['attention_backend']:4s} {'compile' if x['compile'] else 'eager':7s}"
        if x["status"] == "ok":
            mem = f"{x['peak_gpu_memory_gib']:.1f} GiB" if "peak_gpu_memory_gib" in x else f"{x['peak_rss_mib']:.0f} MiB RSS"
            mfu = f"{x['mfu']:.3f}" if x.get("mfu") is not None else "-"
            lines.append(f"{what} {x['images_per_s_median']:9.1f} img/s  {x['tflop_per_s']:7.2f} TFLOP/s  MFU {mfu}  {mem}")
        else:
            lines.append(f"{what} {x['status']}: {x.get('reason') or (x.get('error') or '').splitlines()[-1:]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output folder (device_check.json, device_check.log, the parts' files)")
    ap.add_argument("--cpu-smoke", action="store_true", help="every part on tiny sizes on the CPU (CI)")
    ap.add_argument("--parts", default="abcd", help="which parts to run (default: abcd)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all parts together (default: the sum of the caps)")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mode = "smoke" if a.cpu_smoke else "gpu"
    shares = CAPS[mode]
    parts = [k for k in ORDER if k in a.parts]
    budget = a.budget or sum(shares[k] for k in parts)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow" / "lib")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if a.cpu_smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path even on a GPU machine
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    log = Log(out / "device_check.log")
    sys.path.insert(0, str(REPO / "workflow" / "lib"))
    report = {"cpu_smoke": a.cpu_smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "environment": environment(),
              "budget_seconds": budget, "parts": {}}
    if not a.cpu_smoke and not report["environment"]["cuda_available"]:
        log("no CUDA device here: run with --cpu-smoke, or on a GPU machine")
        return 2
    log(f"device check: {json.dumps(report['environment'])}")
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="featnorm-device-check-"))
    work = scratch / "parts"  # the parts' own files; their figures go into device_check.json
    work.mkdir()
    steps = {"a": lambda cap: part_tests(work, cap, a.cpu_smoke, log, env),
             "b": lambda cap: part_train_step(work, cap, a.cpu_smoke, log, env),
             "c": lambda cap: part_data_pipeline(work, cap, a.cpu_smoke, log, env),
             "d": lambda cap: part_demo(work, cap, a.cpu_smoke, log, env, scratch)}
    try:
        for i, key in enumerate(parts):
            left = budget - (time.perf_counter() - t0)
            cap = max(10.0, left * shares[key] / sum(shares[k] for k in parts[i:]))
            log(f"=== part {key}: {NAMES[key]} (cap {cap:.0f} s)")
            ts = time.perf_counter()
            try:
                report["parts"][key] = steps[key](cap)
            except Exception as e:  # a broken part is a finding, not the end of the check
                report["parts"][key] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            report["parts"][key].update(cap_seconds=round(cap), part_seconds=round(time.perf_counter() - ts, 1))
            report["seconds"] = round(time.perf_counter() - t0, 1)
            (out / "device_check.json").write_text(json.dumps(report, indent=1) + "\n")  # after every part
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["status"] = "ok" if all(p["status"] in ("ok", "skipped") for p in report["parts"].values()) else "failed"
    (out / "device_check.json").write_text(json.dumps(report, indent=1) + "\n")
    log("")
    log(table(report))
    log(f"wrote {out / 'device_check.json'} and {out / 'device_check.log'}")
    return 0 if report["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
