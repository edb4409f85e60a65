"""
The nspawn tier: real Debian hosts (systemd, sshd) as systemd-nspawn containers on a network that exists only in
namespaces the test creates (halofleet/testing/nspawn.py). For everything that needs no kernel, GRUB or podman.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from halofleet.testing import nspawn

# Every host of this tier: no GPU, and the kernel is the controller's (a container has no bootloader to manage).
TIER_DATA = {"halo_boot": "external", "halo_llama_backend": "cpu"}


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
