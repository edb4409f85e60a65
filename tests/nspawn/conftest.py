"""
The nspawn tier: real Debian hosts (systemd, sshd) as systemd-nspawn containers on a network that exists only in
namespaces the test creates (halofleet/testing/nspawn.py). For everything that needs no kernel, GRUB or podman.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from halofleet.testing import nspawn

# Every host of this tier: no GPU, and the kernel is the controller's (a container has no bootloader to manage).
TIER_DATA = {"halo_boot": "external", "halo_llama_backend": "cpu"}


# Controller-side poller of engines (the rolling-restart tests): every 20 ms, GET /health of each URL, one JSON
# line per round: [time, up per URL] with True (200), False (down) or None (busy: no answer within 2 s).
HEALTH_POLLER = """
import json, socket, sys, time, urllib.error, urllib.request
out, urls = sys.argv[1], sys.argv[2:]
def up(url):
    # True: 200; False: refused, closed or an error status (a stopped or loading engine); None: no answer within
    # 2 s (a busy engine on a loaded machine is slow, not down: not counted either way).
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except (socket.timeout, TimeoutError):
        return None
    except urllib.error.URLError as error:
        return None if isinstance(error.reason, (socket.timeout, TimeoutError)) else False
    except Exception:
        return False
with open(out, "w") as handle:
    while True:
        handle.write(json.dumps([time.time()] + [up(url) for url in urls]) + "\\n")
        handle.flush()
        time.sleep(0.02)
"""


@pytest.fixture(scope="session", autouse=True)
def prerequisites() -> None:
    problem = nspawn.available()
    if problem:
        pytest.exit(f"halofleet nspawn tests: {problem}", returncode=2)


@pytest.fixture(scope="session")
def rootfs() -> Path:
    return nspawn.rootfs()


@pytest.fixture
def network(tmp_path, rootfs):
    """A fresh private network; containers booted on it are stopped and their overlays dropped afterwards."""
    with nspawn.Network(tmp_path / "net") as net:
        yield net


@contextmanager
def module_network(tmp_path_factory, name: str) -> Iterator[tuple[nspawn.Network, Path]]:
    """A private network (and a work directory) that a whole module's tests share: containers are booted once."""
    workdir = tmp_path_factory.mktemp(name)
    nspawn.rootfs()
    with nspawn.Network(workdir / "net") as net:
        yield net, workdir
