"""Downloader against a local HTTP server on 127.0.0.1: resume after a cut, verification."""

from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from featnorm.data import hf_plan
from featnorm.data.download import CorruptDownload, DownloadError, download

FILES = {
    "a.tar": np.random.default_rng(0).bytes(300_000),
    "b.tar": np.random.default_rng(1).bytes(50_000),
}


class Handler(http.server.BaseHTTPRequestHandler):
    cut_next: set = set()  # names whose next transfer stops halfway
    ignore_range = False
    served: list = []
    etag: dict = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        data = FILES.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        if name in self.etag:
            self.send_header("X-Linked-ETag", f'"{self.etag[name]}"')
        self.end_headers()
        body = data[start:]
        Handler.served.append((name, start))
        if name in self.cut_next:
            self.cut_next.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.cut_next = set()
    Handler.ignore_range = False
    Handler.served = []
    Handler.etag = {}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_cut_transfer_resumes_with_range_and_verifies(server, tmp_path):
    Handler.cut_next = {"a.tar"}
    out = download(f"{server}/a.tar", tmp_path / "a.tar", sha256=sha(FILES["a.tar"]), backoff=0.01, progress=False)
    assert out.read_bytes() == FILES["a.tar"]
    assert not (tmp_path / "a.tar.part").exists()
    starts = [s for n, s in Handler.served if n == "a.tar"]
    assert starts[0] == 0 and len(starts) == 2 and 0 < starts[1] < len(FILES["a.tar"]), "second request resumed"


def test_existing_part_file_is_resumed(server, tmp_path):
    (tmp_path / "b.tar.part").write_bytes(FILES["b.tar"][:20_000])
    download(f"{server}/b.tar", tmp_path / "b.tar", size=len(FILES["b.tar"]), progress=False)
    assert (tmp_path / "b.tar").read_bytes() == FILES["b.tar"]
    assert Handler.served == [("b.tar", 20_000)]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    Handler.ignore_range = True
    (tmp_path / "b.tar.part").write_bytes(b"junk" * 100)
    download(f"{server}/b.tar", tmp_path / "b.tar", sha256=sha(FILES["b.tar"]), progress=False)
    assert (tmp_path / "b.tar").read_bytes() == FILES["b.tar"]


def test_corrupt_file_fails_verification_with_clear_message(server, tmp_path):
    with pytest.raises(CorruptDownload, match=r"sha256 .* does not match"):
        download(f"{server}/b.tar", tmp_path / "b.tar", sha256="0" * 64, progress=False)
    assert not (tmp_path / "b.tar").exists() and not (tmp_path / "b.tar.part").exists()


def test_server_sha256_header_is_checked(server, tmp_path):
    Handler.etag = {"b.tar": "1" * 64}
    with pytest.raises(CorruptDownload, match="b.tar"):
        download(f"{server}/b.tar", tmp_path / "b.tar", progress=False)
    Handler.etag = {"b.tar": sha(FILES["b.tar"])}
    download(f"{server}/b.tar", tmp_path / "b.tar", progress=False)


def test_missing_file_is_a_clear_error_without_retries(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download(f"{server}/nope.tar", tmp_path / "nope.tar", backoff=0.01, progress=False)


def test_complete_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / "b.tar").write_bytes(FILES["b.tar"])
    download(f"{server}/b.tar", tmp_path / "b.tar", sha256=sha(FILES["b.tar"]), progress=False)
    assert Handler.served == []


def test_hf_plan_lists_spec_shards_as_plain_urls():
    files = hf_plan.plan("imagenet")
    assert len(files) == 1024 + 64
    assert files[0].url == "https://huggingface.co/datasets/adams-story/imagenet1k-256-wds/resolve/main/imagenet1k-train-0000.tar"
    assert files[-1].name == "imagenet1k-validation-63.tar"
    nyu = hf_plan.plan("nyu", ["val"], repo="someone/x")
    assert [f.url for f in nyu] == ["https://huggingface.co/datasets/someone/x/resolve/main/nyu-depth-val-00000.tar"]


def test_download_script_fetches_from_a_mirror_and_writes_manifest(server, tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from featnorm.data.nyu import npy_bytes
    from featnorm.data.shards import ShardWriter

    with ShardWriter(tmp_path / "src", "x") as w:
        for i in range(3):
            w.write({"__key__": f"{i:05d}", "jpg": b"\xff\xd8\xff fake", "depth.npy": npy_bytes(np.ones((2, 2), np.float32))})
    FILES["nyu-depth-val-00000.tar"] = (tmp_path / "src" / "x-00000.tar").read_bytes()
    try:
        path = Path(__file__).resolve().parents[1] / "scripts" / "download.py"
        spec = importlib.util.spec_from_file_location("dl", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.main(["--dataset", "nyu", "--split", "val", "--out", str(tmp_path / "nyu"), "--base-url", server])
    finally:
        del FILES["nyu-depth-val-00000.tar"]
    m = json.loads((tmp_path / "nyu" / "val" / "manifest.json").read_text())
    assert m["num_samples"] == 3 and m["keys"] == ["depth.npy", "jpg"]
    assert m["shards"][0]["name"] == "nyu-depth-val-00000.tar"
