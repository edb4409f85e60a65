"""
The files halofleet manages on a host, as the host has them: their SHA-256 (:class:`ManagedFiles`, which the
probe carries so no-op runs hash nothing twice) and what halofleet recorded at its first touch of each one
(:class:`Backups`; the operations that keep them are in :mod:`halofleet.operations.halo_files`).
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

from ..contract.paths import BACKUP_ORIGINALS, CONFIG_DIR, MANAGED_FILES


def parse_sha256sums(lines: list[str]) -> dict[str, str]:
    """``sha256sum`` output -> {path: hex digest}; files that do not exist are simply absent."""
    sums = {}
    for line in lines:
        digest, _, path = line.strip().partition("  ")
        if len(digest) == 64 and path:
            sums[path] = digest
    return sums


class ManagedFiles(FactBase[dict]):
    """SHA-256 of every file halofleet manages that exists: {path: digest}."""

    default = dict

    def command(self) -> str:
        return "sha256sum " + " ".join(MANAGED_FILES) + " 2>/dev/null; true"

    def process(self, output):
        return parse_sha256sums(list(output))


def parse_backups(lines: list[str]) -> dict[str, Any]:
    """``@record <name>`` (the records of first touches) and ``@in <name>`` (what halofleet's config dir holds)."""
    records, config_dir = [], None
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if tag == "@record" and rest:
            records.append(rest)
        elif tag == "@dir":
            config_dir = []
        elif tag == "@in" and rest and config_dir is not None:
            config_dir.append(rest)
    return {"records": sorted(records), "config_dir": sorted(config_dir) if config_dir is not None else None}


class Backups(FactBase[dict]):
    """
    What halofleet recorded at its first touch of each file (see :mod:`halofleet.operations.halo_files`), and the
    names in its own configuration directory (None: no such directory).

    .. code:: python

        {"records": ["etc__haproxy__haproxy.cfg", "etc__halofleet__serve.env.absent"], "config_dir": ["serve.env"]}
    """

    def command(self) -> str:
        return (f"ls -1A {BACKUP_ORIGINALS} 2>/dev/null | head -n 1000 | sed 's/^/@record /'; "
                f"if [ -d {CONFIG_DIR} ]; then echo @dir; ls -1A {CONFIG_DIR} | head -n 1000 | sed 's/^/@in /'; fi; "
                "true")

    def process(self, output):
        return parse_backups(list(output))
