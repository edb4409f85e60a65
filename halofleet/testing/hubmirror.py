"""
A tiny stand-in for a model host and the Hugging Face Hub, for tests on a private network: plain files with
HTTP ranges (so resumed downloads are exercised), and the two Hub paths halofleet uses, the tree API (paginated
with a ``Link`` header, LFS entries carrying ``lfs.oid``) and ``resolve``. Every request is logged as one JSON
line (path, range, whether an Authorization header came), so a test can count downloads and see the token go to
the Hub only.

    python -m halofleet.testing.hubmirror ROOT ADDRESS PORT LOG [TOKEN]

``ROOT/files/<name>`` is served at ``/files/<name>``; ``ROOT/hub/<owner>/<repo>/<path>`` is the repo (any
revision name). With TOKEN, the Hub paths answer 401 without ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PAGE = 2  # entries per tree page: small, so pagination is always exercised
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


def tree_entry(repo_dir: Path, file: Path) -> dict:
    data = file.read_bytes()
    entry = {"type": "file", "path": file.relative_to(repo_dir).as_posix(), "size": len(data),
             "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    if file.name.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
    return entry


class Handler(BaseHTTPRequestHandler):
    root: Path
    log: Path
    token: str | None

    def log_message(self, *args) -> None:  # quiet: the JSON log is what tests read
        pass

    def _record(self, status: int) -> None:
        with open(self.log, "a") as handle:
            handle.write(json.dumps({"path": self.path, "range": self.headers.get("Range"), "status": status,
                                     "auth": self.headers.get("Authorization") is not None}) + "\n")

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self._record(status)
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        return not self.token or self.headers.get("Authorization") == f"Bearer {self.token}"

    def _file(self, path: Path) -> None:
        if not path.is_file():
            self._send(404, b"not found")
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and "-" in wanted:  # "bytes=N-" (resume) or "bytes=N-M" (a header slice)
            first, last = wanted[6:].split("-", 1)
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            self._send(206, data[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
            return
        self._send(200, data, {"Accept-Ranges": "bytes"})

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = urlsplit(self.path)
        segments = [unquote(segment) for segment in parts.path.split("/")[1:]]
        if ".." in segments:
            self._send(400, b"bad path")
            return
        if segments[:1] == ["files"]:
            self._file(self.root / "files" / "/".join(segments[1:]))
            return
        if not self._authorized():
            self._send(401, b"unauthorized")
            return
        if segments[:2] == ["api", "models"] and len(segments) >= 6 and segments[4] == "tree":
            repo_dir = self.root / "hub" / segments[2] / segments[3]
            if not repo_dir.is_dir():
                self._send(404, b"no such repo")
                return
            files = sorted(path for path in repo_dir.rglob("*") if path.is_file())
            page = int(parse_qs(parts.query).get("cursor", ["0"])[0])
            entries = [tree_entry(repo_dir, file) for file in files[page * PAGE:(page + 1) * PAGE]]
            headers = {"Content-Type": "application/json"}
            if (page + 1) * PAGE < len(files):
                base = f"http://{self.headers.get('Host')}{parts.path}"
                headers["Link"] = f'<{base}?recursive=true&cursor={page + 1}>; rel="next"'
            self._send(200, json.dumps(entries).encode(), headers)
            return
        if len(segments) >= 5 and segments[2] == "resolve":
            self._file(self.root / "hub" / segments[0] / segments[1] / "/".join(segments[4:]))
            return
        self._send(404, b"not found")

    do_HEAD = do_GET


def serve(root: Path, address: str, port: int, log: Path, token: str | None = None) -> None:
    handler = type("BoundHandler", (Handler,), {"root": root, "log": log, "token": token})
    ThreadingHTTPServer((address, port), handler).serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]),
          sys.argv[5] if len(sys.argv) > 5 else None)
