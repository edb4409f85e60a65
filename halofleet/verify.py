"""
What is actually live on each host: the preflight probe read again after a deploy, judged against the host's own
plan. Read-only: gathering it changes nothing.
"""

from __future__ import annotations

from typing import Any

from . import cmdline, policy
from .config import ConfigError, HostRefused
from .plan import build_plan

COLUMNS = ("host", "cmdline", "ttm GiB", "gtt (sysfs)", "rocm", "cwsr", "runtime", "reboot pending", "status")


def verify_row(host: str, data: dict[str, Any], probe: dict[str, Any] | None) -> dict[str, str]:
    """One row of the verification table for ``host``; never raises."""
    row = {column: "-" for column in COLUMNS}
    row["host"] = host
    if probe is None:
        row["status"] = "unreachable"
        return row
    gtt = probe.get("gtt") or {}
    pages = gtt.get("ttm_pages_limit") or gtt.get("amdttm_pages_limit")
    row["ttm GiB"] = f"{pages / policy.PAGES_PER_GIB:g}" if pages else "not loaded"
    cards = gtt.get("cards") or {}
    row["gtt (sysfs)"] = ", ".join(f"{card} {size / 2**30:g} GiB" for card, size in sorted(cards.items())) or "skipped"
    row["rocm"] = (probe.get("rocm") or {}).get("version") or "none"
    row["runtime"] = ", ".join(sorted(probe.get("runtimes") or {})) or "none"
    try:
        plan = build_plan(host, data, probe)
    except (ConfigError, HostRefused) as error:
        row["status"] = f"refused: {error}"
        return row
    live = probe.get("live_cmdline") or []
    live_ok = cmdline.satisfies(live, plan.kernel_params)
    row["cmdline"] = "ok" if live_ok else "differs"
    row["cwsr"] = plan.gpu_check(plan.cwsr["supported"])
    row["reboot pending"] = "yes" if plan.reboot_needed else "no"
    pages_ok = pages == plan.gtt.pages_limit
    row["status"] = "ok" if live_ok and pages_ok else "not converged"
    return row


def format_table(rows: list[dict[str, str]]) -> str:
    widths = {column: max(len(column), *(len(row[column]) for row in rows)) for column in COLUMNS}
    lines = ["  ".join(column.ljust(widths[column]) for column in COLUMNS)]
    lines.append("  ".join("-" * widths[column] for column in COLUMNS))
    for row in rows:
        lines.append("  ".join(row[column].ljust(widths[column]) for column in COLUMNS))
    return "\n".join(lines)


def collect(inventory_path: str) -> list[dict[str, str]]:
    """Connect to every host of a pyinfra inventory file, probe it, and build the rows."""
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.facts import get_facts
    from pyinfra.context import ctx_inventory, ctx_state
    from pyinfra_cli.inventory import make_inventory

    from .facts.halo import HostProbe

    state = State()
    ctx_state.set(state)
    inventory = make_inventory(inventory_path)
    ctx_inventory.set(inventory)
    state.init(inventory, Config())
    connect_all(state)
    try:
        probes = get_facts(state, HostProbe)
    finally:
        disconnect_all(state)
    rows = []
    for host in inventory:
        probe = probes.get(host) if host in state.activated_hosts else None
        rows.append(verify_row(host.name, host.data.dict(), probe))
    return rows
