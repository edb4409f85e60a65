"""
The memory plan against the real thing: the KV cache halofleet predicts for a model (its header read on the host
over SSH, kvcache.need_on_host) and the one forky's llama-server says it allocated when it loads that model.
"""

from __future__ import annotations

import re
import time

import pytest

from halofleet.contract.config import OPTIONS
from halofleet.facts.model_header import need_on_host
from halofleet.testing.tinymodel import write_tiny_gemma2, write_tiny_llama

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

MIB = 1 << 20
# llama_kv_cache's line (llama-kv-cache.cpp): total, cells per stream, layers, seqs/streams, K and V
KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) seqs\), "
                     r"K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB")


class SshHost:
    """Enough of a pyinfra host for need_on_host: a fact's command run over SSH, its output processed."""

    def __init__(self, box) -> None:
        self.box = box
        self.calls = 0

    def get_fact(self, fact, **kwargs):
        self.calls += 1
        instance = fact()
        return instance.process(self.box.ssh(instance.command(**kwargs)).stdout.splitlines())


def kv_lines(box, caches: int = 1, timeout: float = 90) -> list[tuple]:
    """The llama_kv_cache lines of the engine's last start (llama-server sizes its context twice: -fit, then real)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        log = box.ssh("journalctl -u halo-serve --no-pager -o cat", check=False).stdout
        found = KV_LINE.findall(log)
        if len(found) >= 2 * caches and "listening on http" in log:
            return found
        time.sleep(1)
    raise AssertionError(f"no llama_kv_cache line in the engine's log after {timeout:.0f} s")


def test_predicted_kv_cache_is_what_llama_server_allocates(network, tmp_path):
    # heads of 32 (64 / 2), so q8_0 blocks fit; -c 20000 -np 3: padding, three streams and q8_0 rows at once
    model = write_tiny_llama(tmp_path / "tiny-h2.gguf", n_head=2)
    (srv1,) = network.boot(["srv1"])
    data = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 20000,
            "halo_llama_parallel": 3, "halo_llama_kv_type": "q8_0", "halo_llama_args": ["-v"]}
    description = network.write_inventory(tmp_path / "hosts.json", host_data={"srv1": data}, hosts=[srv1])
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]

    host_path = f"{OPTIONS['halo_model_dir'].default}/{model.name}"
    host = SshHost(srv1)
    need = need_on_host(host, host_path, 20000, "q8_0", parallel=3)
    assert host.calls >= 1 and need.name == model.name
    total, cells, layers, seqs, streams, k_type, k_mib, v_type, v_mib = kv_lines(srv1)[-1]
    assert (k_type, v_type, int(layers), int(seqs), int(streams)) == ("q8_0", "q8_0", 2, 3, 3)
    assert int(cells) * int(streams) == need.cells  # 6912 per slot: pad(pad(20000) / 3)
    assert abs(float(total) - need.kv / MIB) <= 0.005, (total, need.kv / MIB)
    assert abs(float(k_mib) - need.kv / 2 / MIB) <= 0.005 and abs(float(v_mib) - need.kv / 2 / MIB) <= 0.005

    second = network.run_pyinfra(description, "deploys/full.py")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.changed_ops == []


def test_sliding_window_cache_of_a_gemma2_is_what_llama_server_allocates(network, tmp_path):
    # every other layer of a gemma2 uses the window (64): per slot pad(min(1024, 64 + ubatch 512)) = 768 cells
    model = write_tiny_gemma2(tmp_path / "tiny-gemma2.gguf", window=64)
    (srv1,) = network.boot(["srv1"])
    data = {**TIER_DATA, "halo_model": str(model), "halo_model_push": True, "halo_ctx": 2048,
            "halo_llama_parallel": 2, "halo_llama_args": ["-v"]}
    description = network.write_inventory(tmp_path / "hosts.json", host_data={"srv1": data}, hosts=[srv1])
    first = network.run_pyinfra(description, "deploys/full.py")
    assert first.returncode == 0, first.stderr[-3000:]

    need = need_on_host(SshHost(srv1), f"{OPTIONS['halo_model_dir'].default}/{model.name}", 2048, parallel=2)
    full, window = kv_lines(srv1, caches=2)[-2:]  # llama_kv_cache_iswa: the full cache, then the window's
    assert (int(full[1]), int(window[1]), int(full[4]), int(window[4])) == (1024, 768, 2, 2)
    assert need.cells == 1024 * 2 and need.swa_cells == 768 * 2
    allocated = float(full[0]) + float(window[0])
    assert abs(allocated - need.kv / MIB) <= 0.01, (allocated, need.kv / MIB)
