"""WebDataset shards: resolving shard lists, reading samples, writing shards and manifests.

A split directory holds `<prefix>-NNNNN.tar` shards and `manifest.json`:

    {"split": "train", "num_samples": N, "keys": ["cls", "jpg"],
     "shards": [{"name": "train-00000.tar", "samples": n, "bytes": b, "sha256": "..."}, ...]}

Samples are groups of tar members sharing a key (`000123.jpg`, `000123.cls`), as in
WebDataset. Shards are written reproducibly: members in the given order, mtime 0,
uid/gid 0, mode 0644, no user names, so re-running a packer gives byte-identical files.
Reading is streaming (`tarfile` mode `r|`): a truncated member ends that shard with a
warning; problems with single samples are reported through `BadInputLog`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from braceexpand import braceexpand
from webdataset.tariterators import base_plus_ext

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ShardError(FileNotFoundError):
    """A shard, directory or pattern named by the user does not exist or matches nothing."""


@dataclass
class BadInputLog:
    """Samples skipped because they could not be read; `records` are (shard, key, reason)."""

    records: list = field(default_factory=list)

    def add(self, shard: str, key: str, reason: str) -> None:
        self.records.append((shard, key, reason))
        log.warning("skipping bad sample %s in %s: %s", key, shard, reason)

    def __len__(self) -> int:
        return len(self.records)


# ----------------------------------------------------------------------------- resolving


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ShardError(f"no {MANIFEST} in {directory}; run scripts/pack_shards.py on it first")
    return json.loads(path.read_text())


def resolve_shards(spec: str | Path | list) -> list[Path]:
    """Shard paths from a directory (its manifest.json, else its *.tar files), a brace
    pattern (`dir/train-{00000..00047}.tar`) or a list of those. Raises ShardError naming
    the path when a shard is missing or nothing matches."""
    if isinstance(spec, (list, tuple)):
        out: list[Path] = []
        for s in spec:
            out += resolve_shards(s)
        return out
    spec = str(spec)
    if not spec:
        raise ShardError("no shards given (empty path or pattern); set data.train_shards")
    p = Path(spec)
    if p.is_dir():
        if (p / MANIFEST).is_file():
            paths = [p / s["name"] for s in read_manifest(p)["shards"]]
        else:
            paths = sorted(p.glob("*.tar"))
        if not paths:
            raise ShardError(f"shard directory {p} holds no .tar shards")
    else:
        paths = [Path(x) for x in braceexpand(spec)]
    for x in paths:
        if not x.is_file():
            raise ShardError(f"shard {x} does not exist")
    if not paths:
        raise ShardError(f"pattern {spec} matches no shards")
    return paths


def manifest_num_samples(spec: str | Path) -> int | None:
    """Sample count from manifest.json when `spec` is a split directory, else None."""
    p = Path(str(spec))
    if p.is_dir() and (p / MANIFEST).is_file():
        return int(read_manifest(p)["num_samples"])
    return None


# ----------------------------------------------------------------------------- reading


def iter_samples(path: str | Path, bad: BadInputLog | None = None) -> Iterator[dict]:
    """Samples of one shard as dicts `{"__key__", "__shard__", <ext>: bytes, ...}`.

    A truncated or unreadable tar stops this shard (what was read is kept) and is
    reported to `bad`; it never raises for damaged content, only for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard {path} does not exist")
    bad = bad if bad is not None else BadInputLog()
    name = path.name
    current: dict | None = None
    member_name = "(start)"
    with path.open("rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r|") as tf:
                for member in tf:
                    member_name = member.name
                    if not member.isreg():
                        continue
                    prefix, ext = base_plus_ext(member.name)
                    if prefix is None:
                        continue
                    data = tf.extractfile(member).read()
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    if current is None or current["__key__"] != prefix:
                        if current is not None:
                            yield current
                        current = {"__key__": prefix, "__shard__": name}
                    current[ext.lower()] = data
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            bad.add(name, member_name, f"truncated or unreadable tar ({e}); rest of shard skipped")
            current = None  # the sample being read when the shard broke is incomplete
    if current is not None:
        yield current


# ----------------------------------------------------------------------------- writing


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


class ShardWriter:
    """Write samples (dicts of ext -> bytes plus `__key__`) into `<prefix>-NNNNN.tar` shards
    of about `shard_bytes` each, then `manifest.json` on `close()`."""

    def __init__(self, out_dir: str | Path, prefix: str, shard_bytes: int = 1 << 30, split: str | None = None, extra: dict | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.shard_bytes = shard_bytes
        self.split = split or prefix
        self.extra = extra or {}
        self.shards: list[dict] = []
        self.keys: set[str] = set()
        self._tar: tarfile.TarFile | None = None
        self._path: Path | None = None
        self._count = 0
        self._bytes = 0

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.shards):05d}.tar"
        self._path = self.out_dir / name
        self._tar = tarfile.open(self._path, "w", format=tarfile.USTAR_FORMAT)
        self._count = 0
        self._bytes = 0

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self.shards.append(
            {
                "name": self._path.name,
                "samples": self._count,
                "bytes": self._path.stat().st_size,
                "sha256": sha256_file(self._path),
            }
        )
        self._tar = None

    def write(self, sample: dict) -> None:
        key = sample["__key__"]
        if self._tar is not None and self._bytes >= self.shard_bytes:
            self._close_shard()
        if self._tar is None:
            self._open()
        for ext in sorted(k for k in sample if not k.startswith("__")):
            data = sample[ext]
            if isinstance(data, str):
                data = data.encode()
            self._tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))
            self._bytes += len(data) + 512
            self.keys.add(ext)
        self._count += 1

    def close(self) -> dict:
        self._close_shard()
        manifest = write_manifest(self.out_dir, self.split, self.shards, sorted(self.keys), self.extra)
        return manifest

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self._tar is not None:
            self._tar.close()


def write_manifest(out_dir: str | Path, split: str, shards: list[dict], keys: Iterable[str], extra: dict | None = None) -> dict:
    manifest = {
        "split": split,
        "num_samples": sum(s["samples"] for s in shards),
        "keys": sorted(keys),
        "shards": shards,
        **(extra or {}),
    }
    path = Path(out_dir) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return manifest


def verify_shards(paths: list[Path], required_keys: Iterable[str], check_sha256: dict | None = None) -> list[dict]:
    """Read every sample of existing WebDataset shards, check each has `required_keys`;
    returns manifest shard entries. Raises ValueError naming shard and key on a problem."""
    required = set(required_keys)
    entries = []
    for path in paths:
        bad = BadInputLog()
        n = 0
        for sample in iter_samples(path, bad):
            missing = required - set(sample)
            if missing:
                raise ValueError(f"shard {path}: sample {sample['__key__']} lacks keys {sorted(missing)}")
            n += 1
        if bad.records:
            raise ValueError(f"shard {path} is damaged: {bad.records[0][2]}")
        digest = sha256_file(path)
        if check_sha256 and path.name in check_sha256 and check_sha256[path.name] != digest:
            raise ValueError(f"shard {path}: sha256 {digest} differs from the expected {check_sha256[path.name]}")
        entries.append({"name": path.name, "samples": n, "bytes": path.stat().st_size, "sha256": digest})
    return entries


def index_webdataset(spec, out: str | Path, split: str, keys: Iterable[str]) -> dict:
    """Already-WebDataset shards (the paper author's): check keys and counts and write
    `manifest.json` in `out` (shard names relative to it); nothing is re-encoded."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = resolve_shards(spec)
    keys = sorted(keys)
    entries = verify_shards(paths, keys)
    for e, p in zip(entries, paths):
        e["name"] = os.path.relpath(p, out)
    return write_manifest(out, split, entries, keys, {"source": "webdataset"})
