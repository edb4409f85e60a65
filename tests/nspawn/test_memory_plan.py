"""
The memory plan on a real host, before the first change: models that may be loaded at once are sized from their
GGUF headers (a download's from its source over HTTP ranges, a pushed file's here) and compared with the host's GTT
budget; over budget refuses the host with the numbers and nothing reaches it; within budget preflight prints the
table and the deploy serves.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from halofleet.testing import tinymodel
from halofleet.testing.tinymodel import write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
BIG_CTX = 1048576


def kv_bytes(ctx: int) -> int:
    """f16 K and V per layer for every cell; llama.cpp pads the cells to 256; the tiny model has as many KV heads as
    heads, so a cell's K (and V) row is the embedding width."""
    cells = -(-ctx // 256) * 256
    return cells * tinymodel.N_LAYERS * 2 * tinymodel.N_EMBD * 2


def weights_bytes(path: Path) -> int:
    import gguf  # the reference reader (the demo extra), not halofleet's own

    return sum(int(tensor.n_bytes) for tensor in gguf.GGUFReader(str(path)).tensors)


def test_models_over_the_gtt_budget_are_refused_with_the_numbers_then_served_when_they_fit(network, tmp_path):
    files = tmp_path / "mirror" / "files"
    files.mkdir(parents=True)
    alpha = write_tiny_llama(files / "alpha.gguf", seed=1)
    gamma = write_tiny_llama(files / "gamma.gguf", seed=3)
    beta = write_tiny_llama(tmp_path / "beta.gguf", seed=2)
    log = tmp_path / "mirror.log"
    network.popen([sys.executable, "-m", "halofleet.testing.hubmirror", str(tmp_path / "mirror"), network.gateway,
                   "8000", str(log)], cwd=ROOT)
    (srv,) = network.boot(["srv"])
    base = f"http://{network.gateway}:8000/files"

    def entries(ctx: int, copies: int = 1) -> list[dict]:
        """alpha (and its copies) and gamma downloaded, beta pushed; gamma loaded on demand."""
        digest = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (alpha, gamma)}
        return [
            *({"name": "alpha" if copy == 0 else f"alpha{copy}", "url": f"{base}/alpha.gguf", "ctx": ctx,
               "sha256": digest[alpha]} for copy in range(copies)),
            {"name": "beta", "file": str(beta), "ctx": ctx},
            {"name": "gamma", "url": f"{base}/gamma.gguf", "ctx": ctx, "keep_loaded": False,
             "sha256": digest[gamma]},
        ]

    # The smallest GTT budget the contract allows (4 GiB) against 9 models of 0.5 GiB KV each at 1 Mi cells.
    data = {**TIER_DATA, "halo_gtt_gib": 4, "halo_models_max": 9}
    inventory = network.write_inventory(tmp_path / "hosts.json", host_data={"srv": {
        **data, "halo_models": entries(BIG_CTX, copies=7)}})
    refused = network.run_pyinfra(inventory, "deploys/full.py")
    assert refused.returncode != 0
    alpha_need, others = weights_bytes(alpha) + kv_bytes(BIG_CTX), weights_bytes(beta) + weights_bytes(gamma)
    assert kv_bytes(BIG_CTX) == GIB // 2  # 1 Mi cells x 2 layers x (K + V) x 64 x 2 bytes
    total = 7 * alpha_need + others + 2 * kv_bytes(BIG_CTX)
    expected = (f"does not fit: models that may be loaded at once need {total / GIB:.2f} GiB, over the GTT budget "
                f"of 4.00 GiB (alpha: {weights_bytes(alpha) / GIB:.2f} GiB weights + 0.50 GiB KV at ctx {BIG_CTX} "
                f"(f16) = {alpha_need / GIB:.2f} GiB")
    assert expected in refused.stderr, refused.stderr[-3000:]
    # Refused before the first change: nothing fetched, pushed or written; the headers came over HTTP ranges.
    assert srv.ssh("ls /var/lib/halofleet/models /etc/halofleet/models.ini 2>&1; true").stdout.count("No such") == 2
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    assert {request["path"] for request in requests} == {"/files/alpha.gguf", "/files/gamma.gguf"}
    assert all(request["range"].startswith("bytes=0-") or request["status"] == 206 for request in requests)
    assert all(request["status"] == 206 for request in requests), requests

    inventory = network.write_inventory(tmp_path / "hosts.json",
                                        host_data={"srv": {**data, "halo_models": entries(4096)}})
    served = network.run_pyinfra(inventory, "deploys/full.py")
    assert served.returncode == 0, served.stderr[-3000:]
    table = [line.split("preflight memory plan: ", 1)[1] for line in served.stderr.splitlines()
             if "[srv] preflight memory plan: " in line]
    assert [row.split()[0] for row in table[1:4]] == ["alpha", "beta", "gamma"], table
    assert f"{kv_bytes(4096) / GIB:.2f}" == table[1].split()[2]  # the KV column of alpha at ctx 4096
    assert table[-1].endswith("GTT budget: fits"), table
    listed = srv.ssh("curl -s http://127.0.0.1:8080/v1/models").stdout
    assert all(f'"{name}"' in listed for name in ("alpha", "beta", "gamma")), listed
    again = network.run_pyinfra(inventory, "deploys/full.py")
    assert again.returncode == 0 and again.changed_ops == [], again.stderr[-3000:]
