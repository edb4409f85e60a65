"""
Facts of llama.cpp RPC groups: a worker's units, its nftables table and cache (part of the preflight probe), and
what a head's engine loaded onto its workers (read by ``halofleet verify``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pyinfra.api import FactBase

from ..contract import policy
from ..contract.paths import RPC_CACHE, RPC_FIREWALL_SERVICE, RPC_SERVICE, SERVE_SERVICE


def parse_rpc_state(lines: list[str]) -> dict[str, Any]:
    """The RPC worker's unit, its firewall unit, whether our nftables table is loaded, the cache directory."""
    state: dict[str, Any] = {"active": "unknown", "enabled": "unknown", "firewall": "unknown", "table": False,
                             "cache": None}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if tag in ("@active", "@enabled", "@firewall"):
            state[tag[1:]] = rest or "unknown"
        elif tag == "@table":
            state["table"] = True
        elif tag == "@cache" and rest:
            state["cache"] = rest
    return state


class RpcState(FactBase[dict]):
    """
    ``halo-rpc.service`` (a llama.cpp RPC worker) and its firewall: unit states, our nftables table, cache dir.

    .. code:: python

        {"active": "active", "enabled": "enabled", "firewall": "active", "table": True, "cache": "halo 750"}
    """

    def command(self) -> str:
        return (
            f'echo "@active $(systemctl is-active {RPC_SERVICE} 2>/dev/null)"; '
            f'echo "@enabled $(systemctl is-enabled {RPC_SERVICE} 2>/dev/null)"; '
            f'echo "@firewall $(systemctl is-active {RPC_FIREWALL_SERVICE} 2>/dev/null)"; '
            f"command -v nft >/dev/null 2>&1 && nft list table inet {policy.RPC_NFT_TABLE} >/dev/null 2>&1 "
            "&& echo @table; "
            f'[ -d {RPC_CACHE} ] && echo "@cache $(stat -c \'%U %a\' {RPC_CACHE})"; true'
        )

    def process(self, output):
        return parse_rpc_state(list(output))


# llama-server (0.7.0, build b11669) names the RPC devices it uses only in its load log, at verbosity 4 (an RPC
# head runs with -lv 4): "using device RPC0 (10.0.0.2:50052) ..." and "RPC0[10.0.0.2:50052] model buffer size =
# 0.31 MiB". Read from the journal of the engine's current invocation only (an older start proves nothing).
RPC_LOG_COMMAND = (
    f"id=$(systemctl show -p InvocationID --value {SERVE_SERVICE} 2>/dev/null); [ -n \"$id\" ] || exit 0; "
    "journalctl -q -o cat _SYSTEMD_INVOCATION_ID=$id 2>/dev/null "
    "| grep -E 'using device RPC[0-9]+ |RPC[0-9]+\\[.*\\] model buffer size' | tail -n 256"
)
RPC_DEVICE_LINE = re.compile(r"using device RPC[0-9]+ \(([^)\s]+)\)")
RPC_BUFFER_LINE = re.compile(r"RPC[0-9]+\[(\S+?)\] model buffer size\s*=\s*([0-9]+(?:\.[0-9]+)?) MiB")


def parse_rpc_log(lines: list[str]) -> dict[str, Any]:
    """The RPC endpoints the engine's current start used (``devices``) and its model buffer on each (MiB)."""
    devices: list[str] = []
    buffers: dict[str, float] = {}
    for line in lines:
        match = RPC_DEVICE_LINE.search(line)
        if match and match.group(1) not in devices:
            devices.append(match.group(1))
        match = RPC_BUFFER_LINE.search(line)
        if match:
            buffers[match.group(1)] = buffers.get(match.group(1), 0.0) + float(match.group(2))
    return {"devices": devices, "buffers": buffers}


class RpcLog(FactBase[dict]):
    """
    What an RPC head's llama-server loaded onto its workers, from its current start's log.

    .. code:: python

        {"devices": ["10.0.0.2:50052", "10.0.0.3:50052"], "buffers": {"10.0.0.2:50052": 0.31, ...}}
    """

    def command(self) -> str:
        return RPC_LOG_COMMAND

    def process(self, output):
        return parse_rpc_log(list(output))


def parse_addresses(lines: list[str]) -> list[str] | None:
    """``ip -o addr`` as ``@addr <address>/<prefix>`` lines -> the host's own IP addresses (None: unknown)."""
    found = []
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        if tag != "@addr":
            continue
        try:
            found.append(str(ipaddress.ip_interface(rest.strip()).ip))
        except ValueError:
            continue
    return sorted(set(found)) if found else None


class HostAddresses(FactBase):
    """
    The host's own IP addresses (every interface), or None if ``ip`` could not list them.

    .. code:: python

        ["10.0.0.2", "127.0.0.1", "::1"]
    """

    def command(self) -> str:
        return "ip -o addr show 2>/dev/null | awk '{ print \"@addr\", $4 }' | head -n 4096; true"

    def process(self, output):
        return parse_addresses(list(output))
