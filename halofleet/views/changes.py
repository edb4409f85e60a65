"""
What a prepared deploy would change on one host: each changing operation with its file diff and the commands it
would run, secrets masked. Shared by ``halofleet diff`` (:mod:`.review`) and the ``--dry --diff`` listing the
run summary installs (:mod:`.summary`).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field

from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand

from ..contract.config import SECRET_KEYS
from ..fleet.gateway import Slot

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # pyinfra colours its log lines


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


REDACTED = "<redacted>"


@dataclass
class OperationChange:
    name: str
    diff: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass
class HostReview:
    host: str
    status: str  # "changes" | "converged" | "refused" | "unreachable"
    operations: list[OperationChange] = field(default_factory=list)
    reason: str = ""
    warnings: list[str] = field(default_factory=list)  # what the deploy warned about on this host


WARNING_MARK = "halofleet: "  # deploy.current_plan and the stages log each warning as "[host] halofleet: ..."


def host_warnings(lines: list[str], host: str) -> list[str]:
    """The warnings the deploy logged for ``host`` while it was prepared, in order, each once."""
    found: list[str] = []
    for line in lines:
        match = re.match(r"\[([^\]]+)\]\s*(.*)", line)
        if match and match.group(1) == host and match.group(2).startswith(WARNING_MARK):
            text = match.group(2)[len(WARNING_MARK):].strip()
            if text not in found:
                found.append(text)
    return found


def describe_command(command) -> str:
    if isinstance(command, StringCommand):
        return command.get_masked_value()
    if isinstance(command, FileUploadCommand):
        source = command.src if isinstance(command.src, str) else "(generated content)"
        return f"# upload {source} -> {command.dest}"
    if isinstance(command, FunctionCommand):
        return "\n".join([f"# on the control machine: {command.function.__name__}()", *_inner(command.args)])
    return str(command)


def _inner(args) -> list[str]:
    """What a function command runs, shown rather than hidden: its shell commands (masked) and gateway drains."""
    drains, commands = [], []
    for arg in args:
        if isinstance(arg, StringCommand):
            commands.append(arg.get_masked_value())
        elif isinstance(arg, tuple) and arg and all(isinstance(slot, Slot) for slot in arg):
            drains += [f"# drained at gateway {slot.gateway} ({slot.proxy}/{slot.server}) first, put back once "
                       "haproxy sees it UP" for slot in arg]
    return drains + commands


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(strip_ansi(record.getMessage()))


def _diff_lines(lines: list[str]) -> list[str]:
    """Keep what our diff logger prints (``Will create/modify/remove ...`` and the ``+``/``-`` lines)."""
    kept = []
    for line in lines:
        text = re.sub(r"^\[[^\]]+\]\s*", "", line.rstrip("\n")).rstrip()
        if text.startswith("Will ") or text.lstrip().startswith("(content withheld"):
            kept.append(text.strip())
        elif text.startswith("  ") and text.strip():
            body = text[2:]
            # pyinfra's "+ line" / "- line" into unified-diff "+line" / "-line"
            kept.append(body[0] + body[2:] if body[:2] in ("+ ", "- ") else body)
    return kept


def host_changes(state, host, capture: _Capture | _Swallow | None = None) -> HostReview:
    """Every prepared operation that would change ``host``, with its commands (and, given a capture of pyinfra's
    log while ``--diff`` is on, its file diff). Generating the commands again has no side effect on the host."""
    from pyinfra.context import ctx_host

    result = HostReview(host.name, "converged")
    for op_hash in state.get_op_order():
        try:
            op_data = state.get_op_data_for_host(host, op_hash)
        except KeyError:
            continue
        start = len(capture.lines) if capture else 0
        with ctx_host.use(host):
            commands = [describe_command(command) for command in op_data.command_generator()]
        if commands:
            name = ", ".join(sorted(state.get_op_meta(op_hash).names))
            diff = _diff_lines(capture.lines[start:]) if capture else []
            result.operations.append(OperationChange(name, diff, commands))
    if result.operations:
        result.status = "changes"
    return result


def inventory_secrets(inventory) -> set[str]:
    return {str(host.data.get(key)) for host in inventory for key in SECRET_KEYS if host.data.get(key)}


class _Swallow(logging.Filter):
    """Keeps what pyinfra logs while the commands are generated again, instead of printing it a second time."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.lines.append(strip_ansi(record.getMessage()))
        return False


def print_dry_run_commands(state) -> None:
    """
    What ``pyinfra INV deploy.py --dry --diff`` adds to pyinfra's own output: the commands each host would run,
    secrets masked (pyinfra prints file diffs, not commands), and with ``-y`` (which skips pyinfra's change
    detection, and so its diffs) the diffs too. Called while the hosts are still connected.
    """
    secrets = inventory_secrets(state.inventory)
    with_diffs = not state.should_check_for_changes()
    diff_setting = state.config.DIFF
    state.config.DIFF = diff_setting and with_diffs
    logger = logging.getLogger("pyinfra")
    lines = ["--> Commands a run would execute (dry run, secrets masked):"]
    try:
        for host in state.inventory:
            if host not in state.activated_hosts or host in state.failed_hosts:
                continue
            swallow = _Swallow()
            logger.addFilter(swallow)
            try:
                result = _redact(host_changes(state, host, swallow), secrets)
            finally:
                logger.removeFilter(swallow)
            if not result.operations:
                lines.append(f"    [{host.name}] no changes")
            for change in result.operations:
                lines.append(f"    [{host.name}] {change.name}")
                lines += [f"      {line}" for line in change.diff]
                lines += [f"        $ {line}" if number == 0 else f"          {line}"
                          for command in change.commands for number, line in enumerate(command.splitlines())]
    finally:
        state.config.DIFF = diff_setting
    print("\n".join(lines), file=sys.stderr)


class _DryRunListing(logging.Handler):
    """Lists the commands when pyinfra's CLI ends a run that never executed (``--dry``) with ``--diff`` on; the
    CLI announces its disconnect just before it happens, so the hosts are still there for the generators."""

    def __init__(self, state) -> None:
        super().__init__(level=logging.INFO)
        self.state = state
        self.done = False

    def emit(self, record: logging.LogRecord) -> None:
        from pyinfra.api.state import StateStage

        if self.done or "Disconnecting from hosts" not in record.getMessage():
            return
        self.done = True
        if self.state.current_stage != StateStage.Prepare or not self.state.config.DIFF:
            return
        try:
            print_dry_run_commands(self.state)
        except Exception as error:  # a listing must never turn a review into a failure
            print(f"--> halofleet could not list the commands: {error}", file=sys.stderr)


def install_dry_run_listing(state) -> logging.Handler:
    handler = _DryRunListing(state)
    logging.getLogger("pyinfra").addHandler(handler)
    return handler


def _redact(result: HostReview, secrets: set[str]) -> HostReview:
    def clean(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text

    for change in result.operations:
        change.diff = [clean(line) for line in change.diff]
        change.commands = [clean(line) for line in change.commands]
    result.reason = clean(result.reason)
    result.warnings = [clean(line) for line in result.warnings]
    return result
