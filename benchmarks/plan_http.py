"""
How long the memory plan takes for a split GGUF read over HTTP range requests, as the preflight check reads a
Hugging Face model (models.fit.http_reader -> kvcache.need_from_reader), and what it costs: requests made and bytes
read against the bytes the files hold.

    .venv/bin/python benchmarks/plan_http.py --shards 60 --runs 5

The model: tinyarch's llama with enough blocks for ``--shards`` files (llama.cpp's split naming), served by a local
HTTP server that honours Range and counts what it sends. Each file is served as ``--shard-gib`` GiB (its real bytes,
then zeros), so a reader that reads more than the header pays for it as it would on a real model. Figures go to
benchmarks/results/plan_http.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from halofleet.models.fit import http_reader
from halofleet.models.gguf import read_header
from halofleet.models.kvcache import need_from_reader, need_of_file
from halofleet.testing.tinyarch import ARCHS, tensor_shapes, write_tiny_arch

RESULTS = Path(__file__).parent / "results" / "plan_http.json"


class CountingRangeHandler(SimpleHTTPRequestHandler):
    """Serves files with single-range GETs, each as ``server.virtual_size`` bytes (zeros after the real ones);
    counts requests and body bytes on the server object."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        data = path.read_bytes() if path.is_file() else None
        self.server.requests += 1
        if data is None:
            self.send_error(404)
            return
        size = max(len(data), self.server.virtual_size)
        first, last = 0, size - 1
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            start, _, end = spec[6:].partition("-")
            first, last = int(start), min(int(end) if end else last, size - 1)
        body = data[first:last + 1]
        body += bytes(last + 1 - first - len(body))
        self.send_response(206 if spec else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        self.wfile.write(body)
        self.server.bytes_sent += len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--shards", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shard-gib", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        spec = ARCHS["llama"]
        layers, per_file = args.shards, 20
        while -(-len(tensor_shapes(spec, layers=layers)) // per_file) < args.shards:  # exactly --shards files
            layers += 1
        tensors = len(tensor_shapes(spec, layers=layers))
        first = write_tiny_arch(Path(directory) / "split.gguf", "llama", {"block_count": layers},
                                split_max_tensors=per_file)
        files = sorted(Path(directory).glob("split-*-of-*.gguf"))
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(CountingRangeHandler, directory=directory))
        server.requests = server.bytes_sent = 0
        server.virtual_size = int(args.shard_gib * (1 << 30))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{first.name}"
        local = need_of_file(str(first), 8192)
        seconds, requests, sent = [], [], []
        for _ in range(args.runs):
            server.requests = server.bytes_sent = 0
            started = time.perf_counter()
            need = need_from_reader(http_reader(), url, 8192, "f16")
            seconds.append(time.perf_counter() - started)
            requests.append(server.requests)
            sent.append(server.bytes_sent)
            assert need.total == local.total, "the plan over HTTP differs from the plan of the local files"
        server.shutdown()
        result = {
            "shards": len(files), "tensors": tensors, "layers": layers,
            "served_bytes_per_file": server.virtual_size,
            "header_bytes": sum(read_header(f.read_bytes()).header_bytes for f in files),
            "seconds_median": round(statistics.median(seconds), 4), "seconds": [round(s, 4) for s in seconds],
            "requests": requests[0], "bytes_read": sent[0], "runs": args.runs,
        }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
