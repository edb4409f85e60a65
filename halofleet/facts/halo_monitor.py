"""
What the monitor stage left on a host, in one round trip: the digests of the files in halofleet's Prometheus
directories (their names come from the inventory, so they are listed rather than named), the units' states,
whether Debian's packages are installed and whether our directories exist.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

from ..contract.paths import (
    EXPORTER_DROPIN_DIR,
    EXPORTER_SERVICE,
    PROMETHEUS_CREDS_DIR,
    PROMETHEUS_DIR,
    PROMETHEUS_SD_DIR,
    PROMETHEUS_SERVICE,
    PROMETHEUS_STORAGE,
    TEXTFILE_DIR,
)

UNITS = {"exporter": EXPORTER_SERVICE, "prometheus": PROMETHEUS_SERVICE, "timer": "halo-textfile.timer",
         "debian_prometheus": "prometheus.service"}
PACKAGES = ("prometheus", "prometheus-node-exporter")
DIRS = {"sd": PROMETHEUS_SD_DIR, "credentials": PROMETHEUS_CREDS_DIR, "storage": PROMETHEUS_STORAGE,
        "textfile": TEXTFILE_DIR, "config": PROMETHEUS_DIR, "dropin": EXPORTER_DROPIN_DIR}


def parse_monitor_state(lines: list[str]) -> dict[str, Any]:
    """``@file <digest> <path>``, ``@unit <key> <active> <enabled>``, ``@pkg <name> <status>``, ``@dir <key>``."""
    state: dict[str, Any] = {"files": {}, "units": {}, "packages": {}, "dirs": []}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        words = rest.split()
        if tag == "@file" and len(words) == 2 and len(words[0]) == 64:
            if words[1].startswith((PROMETHEUS_SD_DIR + "/", PROMETHEUS_CREDS_DIR + "/")):
                state["files"][words[1]] = words[0]
        elif tag == "@unit" and len(words) >= 2 and words[0] in UNITS:
            state["units"][words[0]] = {"active": words[1], "enabled": words[2] if len(words) > 2 else "unknown"}
        elif tag == "@pkg" and words and words[0] in PACKAGES:
            state["packages"][words[0]] = "installed" in words[1:] and "ok" in words[1:]
        elif tag == "@dir" and words and words[0] in DIRS:
            state["dirs"].append(words[0])
    return state


class MonitorState(FactBase[dict]):
    """
    The monitor stage's files, units, packages and directories on this host.

    .. code:: python

        {"files": {"/etc/halofleet/prometheus/targets/node-srv1-ab12cd34.json": "9f..."},
         "units": {"exporter": {"active": "active", "enabled": "enabled"}, ...},
         "packages": {"prometheus-node-exporter": True, "prometheus": False}, "dirs": ["textfile"]}
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return parse_monitor_state([])

    def command(self) -> str:
        files = (f"for f in {PROMETHEUS_SD_DIR}/* {PROMETHEUS_CREDS_DIR}/*; do [ -f \"$f\" ] && "
                 'echo "@file $(sha256sum < "$f" | cut -c1-64) $f"; done')
        units = "; ".join(
            f'echo "@unit {key} $(systemctl is-active {unit} 2>/dev/null | head -n 1) '
            f'$(systemctl is-enabled {unit} 2>/dev/null | head -n 1)"' for key, unit in UNITS.items())
        packages = "; ".join(
            f"echo \"@pkg {name} $(dpkg-query -W -f='${{Status}}' {name} 2>/dev/null)\"" for name in PACKAGES)
        dirs = "; ".join(f"[ -d {path} ] && echo '@dir {key}'" for key, path in DIRS.items())
        return f"{files}; {units}; {packages}; {dirs}; true"

    def process(self, output):
        return parse_monitor_state(list(output))
