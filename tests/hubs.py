"""A Hugging Face hub on loopback (http.server in a thread): the API's file list with sizes and
hashes, and files with HTTP Range; it can drop a connection half-way or serve a corrupted file. And a
forwarding HTTP proxy that records what passed through it. No test reaches the real hub."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LFS_THRESHOLD_BYTES = 1_000_000  # larger files are listed as LFS files (sha256), smaller by git blob id


@dataclass
class HubFile:
    path: Path
    size: int
    sha256: str
    git_sha1: str


def hub_file(path: Path) -> HubFile:
    data = path.read_bytes()
    return HubFile(
        path, len(data), hashlib.sha256(data).hexdigest(), hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    )


@dataclass
class Hub:
    """The repositories served and what happened: ``requests`` holds (path, Range header) of each GET."""

    repos: dict[str, dict[str, HubFile]]
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)  # file name -> how many downloads to cut half-way
    corrupt: set[str] = field(default_factory=set)  # file names served with one byte changed

    def downloads(self, name: str) -> list[str | None]:
        """The Range header of each download of a file called ``name``."""
        return [rng for path, rng in self.requests if "/resolve/" in path and path.endswith("/" + name)]


def commit_of(repo: str) -> str:
    """Each repository's own commit sha (the hub serves its files at that revision only)."""
    return hashlib.sha1(repo.encode(), usedforsecurity=False).hexdigest()


def hub_handler(hub: Hub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hub.requests.append((self.path, self.headers.get("Range")))
            if self.path.startswith("/api/models/"):
                return self._listing(self.path[len("/api/models/") :].split("/revision/")[0])
            repo, _, rest = self.path[1:].partition("/resolve/")
            revision, _, name = rest.partition("/")
            files = hub.repos.get(repo, {})
            if revision != commit_of(repo) or name not in files:  # the real hub: no such file at that revision
                return self._send(404, b"not found")
            return self._file(files[name], name)

        def _listing(self, repo: str) -> None:
            if repo not in hub.repos:
                return self._send(404, b'{"error": "Repository not found"}')
            siblings = []
            for name, f in hub.repos[repo].items():
                sibling: dict[str, object] = {"rfilename": name, "size": f.size, "blobId": f.git_sha1}
                if f.size > LFS_THRESHOLD_BYTES:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
                    sibling["blobId"] = "0" * 40  # the pointer's id, not the contents'
                siblings.append(sibling)
            siblings.append({"rfilename": "README.md", "size": 5, "blobId": "1" * 40})  # not a model file
            self._send(200, json.dumps({"id": repo, "sha": commit_of(repo), "siblings": siblings}).encode())

        def _file(self, f: HubFile, name: str) -> None:
            data = f.path.read_bytes()
            if name in hub.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 1])
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if hub.drops.get(name):
                hub.drops[name] -= 1
                self.wfile.write(data[start : start + (len(data) - start) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def proxy_handler(seen: list[str]) -> type[http.server.BaseHTTPRequestHandler]:
    """A forwarding proxy for http:// URLs (what a client sends to a proxy: the whole URL)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("range",)}
            try:
                response = direct.open(urllib.request.Request(self.path, headers=headers))
            except urllib.error.HTTPError as exc:
                response = exc
            body = response.read()
            self.send_response(response.status)
            for key in ("Content-Range",):
                if response.headers.get(key):
                    self.send_header(key, response.headers[key])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Proxy


def with_timestamp_tokens(source: Path, target: Path) -> Path:
    """A copy of a Whisper tokenizer.json that also lists the 1501 timestamp tokens ``<|0.00|>`` to
    ``<|30.00|>`` as added tokens (the shape of openai/whisper-large-v3-turbo's and newer ones)."""
    tokenizer = json.loads(source.read_text(encoding="utf-8"))
    added = tokenizer["added_tokens"]
    first = max(t["id"] for t in added) + 1
    template = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False}
    added += [{"id": first + i, "content": f"<|{i * 0.02:.2f}|>", **template} for i in range(1501)]
    target.write_text(json.dumps(tokenizer), encoding="utf-8")
    return target


def copy_without(source: Path, target: Path, leave_out: str) -> Path:
    """A copy of a model folder's files, without ``leave_out``."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != leave_out:
            shutil.copy(item, target / item.name)
    return target
