"""HTTP(S) download with resume, retries, verification and atomic rename (urllib only).

`download(url, dest, size=None, sha256=None)`: data goes to `dest.part`; an existing
`.part` is resumed with a `Range: bytes=N-` request (a server that ignores Range makes us
start over); failures are retried with exponential back-off; when the transfer ends, the
size and sha256 are checked (given ones, else the server's Content-Length and, for
Hugging Face LFS files, the sha256 in `X-Linked-ETag`), and only then is the file renamed
into place. A file already in place with the expected size/hash is skipped.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification."""


class CorruptDownload(DownloadError):
    """A complete transfer whose size or sha256 is wrong: resuming cannot fix it."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


def _etag_sha256(headers) -> str | None:
    for name in ("X-Linked-ETag", "ETag"):
        v = headers.get(name)
        if v:
            v = v.strip().strip('W/').strip('"')
            if re.fullmatch(r"[0-9a-f]{64}", v):
                return v
    return None


def _total_size(resp, start: int) -> int | None:
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr and not cr.endswith("/*"):
        return int(cr.rsplit("/", 1)[1])
    cl = resp.headers.get("X-Linked-Size") or resp.headers.get("Content-Length")
    if cl is None:
        return None
    return int(cl) + (start if resp.status == 206 else 0)


def verify(path: Path, size: int | None, sha256: str | None) -> None:
    if size is not None and path.stat().st_size != size:
        raise CorruptDownload(f"{path}: size {path.stat().st_size} bytes, expected {size}; delete it and download again")
    if sha256 is not None:
        got = _sha256(path)
        if got != sha256:
            raise CorruptDownload(f"{path}: sha256 {got} does not match the expected {sha256}; the file is corrupt, delete it and download again")


def _attempt(url: str, part: Path, timeout: float, progress: bool) -> tuple[int | None, str | None]:
    start = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "featnorm-download/1"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # already complete
            return start, None
        raise
    with resp:
        if start and resp.status != 206:
            start = 0  # server ignored Range: start over
        total = _total_size(resp, start)
        digest = _etag_sha256(resp.headers)
        mode = "ab" if start else "wb"
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5], disable=not progress, leave=False)
        with part.open(mode) as f, bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got < total:
        raise DownloadError(f"transfer of {url} stopped at {got} of {total} bytes")
    return total, digest


def download(
    url: str,
    dest: str | Path,
    size: int | None = None,
    sha256: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch `url` to `dest` (see module docstring); returns `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            verify(dest, size, sha256)
            return dest
        except DownloadError:
            if size is None and sha256 is None:
                return dest
            raise
    part = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            total, digest = _attempt(url, part, timeout, progress)
            verify(part, size if size is not None else total, sha256 or digest)
            part.replace(dest)
            return dest
        except CorruptDownload as e:
            part.unlink(missing_ok=True)
            raise CorruptDownload(f"download of {url} failed verification: {e}".replace(str(part), str(dest))) from None
        except DownloadError as e:  # a short transfer: resume it
            last = e
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as e:
            if isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = e
        if attempt < retries:
            wait = backoff * 2**attempt
            log.warning("download of %s failed (%s); retry %d/%d in %.1fs", url, last, attempt + 1, retries, wait)
            time.sleep(wait)
    raise DownloadError(f"could not download {url} after {retries + 1} attempts: {last}")
