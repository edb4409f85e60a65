"""
The fleet's verification rows as a report people would rather read than logs: HTML (self-contained, one table,
one row per host) or Markdown, both from jinja2 templates.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from ..contract.templating import render
from .verify import COLUMNS

GOOD = {"ok", "no", "none", "skipped"}
BAD_PREFIXES = ("differs", "missing", "failed", "refused", "unreachable", "unhealthy", "not converged", "not loaded")


def cell_class(column: str, value: str) -> str:
    """'ok', 'bad', 'warn' or '' for one cell, so the eye finds the problem."""
    if column == "host" or value == "-":
        return ""
    if column == "gateway":
        return "bad" if " DOWN" in value or value == "no backends" else "ok" if " UP" in value else ""
    if column == "reboot pending":
        return "warn" if value == "yes" else "ok"
    if value.startswith(BAD_PREFIXES) or " failed" in value:
        return "bad"
    if column in ("status", "cmdline", "cwsr") and value in GOOD:
        return "ok"
    if column == "serving" and " active" in value:
        return "ok"
    return ""


def rpc_groups(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """
    One entry per RPC group, from the rows' ``rpc`` cells: the head, each worker as the head saw it and as its own
    row says, and the group's state (ok only if the head and every worker are ok and the head saw them all).
    """
    by_host = {row["host"]: row for row in rows}
    groups = []
    for row in rows:
        cell = row.get("rpc", "-")
        if not cell.startswith("head: "):
            continue
        workers, ok = [], row["status"] == "ok"
        for part in cell[len("head: "):].split(", "):
            name, _, seen = part.partition(" ")
            own = by_host.get(name, {})
            ok = ok and seen.startswith("ok") and own.get("status") == "ok"
            workers.append(f"{name}: {seen}; {own.get('rpc', '-').partition(': ')[2] or own.get('status', '?')}")
        groups.append({"head": row["host"], "workers": " | ".join(workers),
                       "state": "ok" if ok else f"degraded (head {row['status'].split(':')[0]})"})
    return groups


def render_report(rows: list[dict[str, str]], fmt: str, title: str, history: Any = None) -> str:
    """``fmt``: 'html' or 'md'; ``history``: the monitor's pictures (:class:`.plots.History`; None: none asked)."""
    summary = Counter(row["status"].split(":")[0] for row in rows)
    classes = {row["host"]: {column: cell_class(column, row[column]) for column in COLUMNS} for row in rows}
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return render(f"report.{fmt}.j2", rows=rows, columns=COLUMNS, row_classes=classes, summary=dict(summary),
                  title=title, generated=generated, groups=rpc_groups(rows), history=history)
