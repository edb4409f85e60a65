"""
The gateway host's state in one round trip: the digests of the files the gateway stage manages, whether haproxy
runs, and each backend's state as haproxy sees it (its local stats socket, ``show stat``).
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

from ..contract.paths import GATEWAY_CERT, HAPROXY_CFG
from ..fleet.gateway import STATS_SOCKET, parse_show_stat

GATEWAY_FILES = (HAPROXY_CFG, GATEWAY_CERT)
# netcat-openbsd talks to the unix socket (-N: close our side after the command, -w: never hang a probe).
SHOW_STAT = f"[ -S {STATS_SOCKET} ] && echo 'show stat' | nc -N -w 5 -U {STATS_SOCKET}"


def parse_gateway_state(lines: list[str]) -> dict[str, Any]:
    """``@sha256 <digest> <path>``, ``@active <state>``, then ``@stat`` and the CSV; unknown lines are skipped."""
    state: dict[str, Any] = {"files": {}, "active": "unknown", "backends": None}
    stat: list[str] | None = None
    for line in lines:
        if stat is not None:
            stat.append(line)
            continue
        tag, _, rest = line.strip().partition(" ")
        if tag == "@sha256":
            digest, _, path = rest.strip().partition(" ")
            if path.strip() in GATEWAY_FILES and len(digest) == 64:
                state["files"][path.strip()] = digest
        elif tag == "@active":
            state["active"] = rest.strip() or "unknown"
        elif tag == "@stat":
            stat = []
    if stat is not None:
        state["backends"] = parse_show_stat(stat)
    return state


class GatewayState(FactBase[dict]):
    """
    haproxy's configuration and certificate digests, its unit state and its backends.

    .. code:: python

        {"files": {"/etc/haproxy/haproxy.cfg": "ab12..."}, "active": "active",
         "backends": [{"group": "fleet", "server": "box1", "status": "UP", "check": "L7OK"}]}
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return parse_gateway_state([])

    def command(self) -> str:
        hashes = "; ".join(f'[ -f {path} ] && echo "@sha256 $(sha256sum {path})"' for path in GATEWAY_FILES)
        return (f"{hashes}; echo \"@active $(systemctl is-active haproxy.service 2>/dev/null)\"; "
                f"if [ -S {STATS_SOCKET} ]; then echo @stat; {SHOW_STAT}; fi; true")

    def process(self, output):
        return parse_gateway_state(list(output))
