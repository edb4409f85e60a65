"""
One line per host at the end of a fleet run: converged (nothing to do), changed (N operations), failed (why) or
unreachable. pyinfra's own output is per operation; a rack operator wants per host.

``install()`` is called by the deploy files; the summary is printed when the pyinfra process exits (stderr, so
``--json`` output stays valid) and, with ``HALOFLEET_SUMMARY_JSON=path``, also written there as JSON.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
from typing import Any

from pyinfra.context import ctx_state

from .changes import install_dry_run_listing, strip_ansi

# What pyinfra/paramiko (and our reboot) log when a host goes away under a run.
UNREACHABLE_SIGNS = ("could not connect", "connection", "socket is closed", "no existing session", "not active",
                     "ssh protocol banner", "did not come back", "unable to connect", "broken pipe", "eoferror")


class _HostErrors(logging.Handler):
    """Keeps the error lines pyinfra and halofleet log for each host (they start with ``[host]``)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)  # pyinfra logs a failing Python callback as a warning
        self.lines: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = strip_ansi(record.getMessage()).strip()
        match = re.match(r"\[([^\]]+)\]\s*(.*)", text, re.S)
        if match:
            line = match.group(2).strip().replace("Unexpected error in Python callback: ", "")
            self.lines.setdefault(match.group(1), []).append(line)


def host_outcomes(run_state, errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Each inventory host's outcome, from pyinfra's own state after the run."""
    outcomes = []
    failed = {host.name for host in run_state.failed_hosts}
    activated = {host.name for host in run_state.activated_hosts}
    for host in run_state.inventory:
        changed = 0
        for op_hash in run_state.get_op_order():
            try:
                op_data = run_state.get_op_data_for_host(host, op_hash)
            except KeyError:  # not an operation of this host
                continue
            operation = op_data.operation_meta
            if operation.is_complete() and operation.did_change():
                changed += 1
        # the lines that say why (not pyinfra's "Error: executed N commands" nor our own warnings)
        reasons = [line for line in errors.get(host.name, [])
                   if line and not line.startswith(("Error: executed", "halofleet: reboot pending", "halofleet: GTT"))]
        if host.name not in activated:
            outcome, reason = "unreachable", "; ".join(reasons[-1:]) or "could not connect"
        elif host.name in failed:
            reason = failure_reason(reasons)
            outcome = failed_outcome(reason)
        else:
            outcome, reason = ("changed" if changed else "converged"), ""
        outcomes.append({"host": host.name, "outcome": outcome, "changed_operations": changed, "reason": reason})
    return outcomes


def failure_reason(lines: list[str]) -> str:
    """The last error line logged for a host, without the exception wrapper pyinfra prints around it."""
    if not lines:
        return "failed"
    match = re.fullmatch(r"\w+(?:Error|Exception)\((['\"])(.*)\1,?\)", lines[-1], re.S)
    return match.group(2) if match else lines[-1]


def failed_outcome(reason: str) -> str:
    """'unreachable' when the host itself went away, else 'failed' (a host not rebooted because another host did not
    come back is failed, not unreachable)."""
    text = reason.lower()
    if "rollout stopped because" in text:
        return "failed"
    return "unreachable" if any(sign in text for sign in UNREACHABLE_SIGNS) else "failed"


def format_outcomes(outcomes: list[dict[str, Any]]) -> str:
    lines = ["halofleet summary:"]
    width = max((len(item["host"]) for item in outcomes), default=4)
    for item in outcomes:
        detail = {
            "changed": f"{item['changed_operations']} operation(s) changed something",
            "converged": "already converged, nothing changed",
        }.get(item["outcome"], item["reason"])
        lines.append(f"  {item['host'].ljust(width)}  {item['outcome'].ljust(11)}  {detail}")
    return "\n".join(lines)


_current: dict[str, Any] = {}  # the run being summarised: a process runs one pyinfra deploy


def _report() -> None:
    run_state, handler = _current.get("state"), _current.get("handler")
    if run_state is None or not _executed(run_state):  # --dry, or stopped before any operation ran
        return
    outcomes = host_outcomes(run_state, handler.lines)
    print(format_outcomes(outcomes), file=sys.stderr)
    target = os.environ.get("HALOFLEET_SUMMARY_JSON")
    if target:
        with open(target, "w") as handle:
            json.dump(outcomes, handle, indent=2)


def _executed(run_state) -> bool:
    for host in run_state.inventory:
        for op_hash in run_state.get_op_order():
            try:
                if run_state.get_op_data_for_host(host, op_hash).operation_meta.is_complete():
                    return True
            except KeyError:
                continue
    return not run_state.activated_hosts  # nobody reachable: worth a summary too


def install() -> None:
    """Summarise this run's hosts when the process exits (once per run, whatever deploy file includes this); in a
    ``--dry --diff`` run, list the commands each host would run instead."""
    run_state = ctx_state.get()
    if _current.get("state") is run_state:
        return
    if not _current:
        atexit.register(_report)
    logger = logging.getLogger("pyinfra")
    for previous in ("handler", "dry_listing"):
        if previous in _current:
            logger.removeHandler(_current[previous])
    handler = _HostErrors()
    logger.addHandler(handler)
    _current.update(state=run_state, handler=handler, dry_listing=install_dry_run_listing(run_state))
