"""
``halofleet check INVENTORY``: everything that can be known about an inventory without contacting a host. Every
host's data through the contract (:func:`halofleet.models.specs.validate`, which also reads the files it pushes
from the control machine), the RPC groups (:mod:`halofleet.fleet.rpc`), the gateways' pools
(:mod:`halofleet.fleet.gateway`), a host in two groups whose group data disagree, and the warnings a deploy would
print anyway. Each finding names the file that sets the key, the host, the key and the fix.

``diff``, ``verify``, ``report`` and ``bench`` run it first: an inventory with an error reaches no host.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..box.serving import engine_image
from ..contract import stacks
from ..contract.config import NO_ENDPOINT, ConfigError, HaloConfig, HostRefused
from ..contract.localfiles import anchor_local_paths
from ..fleet.gateway import inventory_groups, plan_gateway
from ..fleet.monitor import check_monitoring, plan_monitor
from ..fleet.rpc import check_group
from ..models.specs import validate
from .inventory import BadInput, inventory_dir_of, load_inventory

KEY_IN_TEXT = re.compile(r"\bhalo_[a-z0-9_]+")


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    file: str  # the file that sets the key (the inventory when no file does)
    host: str
    key: str
    message: str  # what is wrong and the fix

    def line(self) -> str:
        return f"{self.level}: {self.file}: host {self.host}: {self.key}: {self.message}"


@dataclass
class CheckResult:
    inventory: str
    hosts: list[dict[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.level == "error"]

    def as_json(self) -> dict[str, Any]:
        return {"inventory": self.inventory, "ok": not self.errors, "hosts": self.hosts,
                "findings": [asdict(finding) for finding in self.findings]}


def _base_key(key: str) -> str:
    match = KEY_IN_TEXT.match(key or "")
    return match.group(0) if match else (key or "-")


class _Sources:
    """Which file of the site sets a key of a host: the inventory itself, or a ``group_data/<group>.py``."""

    def __init__(self, inventory, path: str):
        self.inventory, self.path = inventory, path
        folder = os.path.dirname(path)
        self.folders = [os.path.join(folder, "group_data"), "group_data"]

    def group_file(self, group: str) -> str:
        for folder in self.folders:
            candidate = os.path.join(folder, f"{group}.py")
            if os.path.isfile(candidate):
                return candidate
        return self.path  # data given in the inventory file itself: (hosts, data)

    def of(self, host, key: str) -> str:
        key = _base_key(key)
        if key in self.inventory.get_host_data(host.name):
            return self.path
        for group in reversed(host.groups):
            if key in self.inventory.get_group_data(group):
                return self.group_file(group)
        if key in self.inventory.get_data():
            return self.group_file("all")
        return self.path


def _warnings(config: HaloConfig) -> list[tuple[str, str]]:
    """What a deploy of this host would warn about, known from its data alone: (key, message)."""
    found = _stack_warnings(config)
    if config.serve in NO_ENDPOINT:
        return found
    if config.api_key is None and not ipaddress.ip_address(config.bind).is_loopback:
        found.append(("halo_bind", f"the API on {config.bind}:{config.port} is reachable beyond the host without "
                                   "an API key (halo_allow_unauthenticated)"))
    image = engine_image(config)
    if image is not None and "@sha256:" not in image:
        found.append(("halo_image", f"image {image} is not pinned by digest: pin it as name@sha256:..."))
    return found


def _stack_warnings(config: HaloConfig) -> list[tuple[str, str]]:
    """A stack profile older than a release halofleet's table knows (ROCm, firmware, kernel), or a site profile."""
    profile = stacks.resolve(config.stack)
    if profile is None:
        return []
    found = [("halo_stack", f"profile {profile.name} pins {known.what} "
                            f"{_pinned(profile, known.what)}; {known.version} is known "
                            f"({known.source}{', ' + known.date if known.date else ''})")
             for known in stacks.newer_releases(profile)]
    if profile.site:
        found.append(("halo_stack", f"profile {profile.name} is a site profile: halofleet cannot tell whether it is "
                                    "older than the releases it knows"))
    return found


def _pinned(profile: stacks.StackProfile, what: str) -> str:
    return str({"rocm": profile.rocm, "firmware": profile.firmware_min,
                "kernel": profile.kernel_release}[what].value)


def _group_conflicts(inventory, host) -> list[tuple[str, str, list[str]]]:
    """Keys two groups of ``host`` set to different values, the host setting none itself: (key, winner, groups)."""
    own = inventory.get_host_data(host.name)
    setters: dict[str, list[str]] = {}
    for group in host.groups:
        for key in inventory.get_group_data(group):
            if key not in own:
                setters.setdefault(key, []).append(group)
    conflicts = []
    for key, groups in sorted(setters.items()):
        values = [inventory.get_group_data(group)[key] for group in groups]
        if any(value != values[0] for value in values[1:]):
            conflicts.append((key, groups[-1], groups))
    return conflicts


def check(inventory_path: str) -> CheckResult:
    """Check ``inventory_path`` without contacting any host (a file that fails to load is a BadInput)."""
    from pyinfra.api import State
    from pyinfra.context import ctx_inventory, ctx_state

    ctx_state.set(State())
    inventory = load_inventory(inventory_path)
    ctx_inventory.set(inventory)
    sources = _Sources(inventory, inventory_path)
    base = inventory_dir_of(inventory_path)
    result = CheckResult(inventory_path)
    hosts = list(inventory)
    bad: set[str] = set()

    def add(level: str, host, key: str, message: str) -> None:
        result.findings.append(Finding(level, sources.of(host, key), host.name, _base_key(key), message))

    fleet = {host.name: anchor_local_paths(host.data.dict(), base) for host in hosts}
    configs: dict[str, HaloConfig] = {}
    for host in hosts:
        for key, winner, groups in _group_conflicts(inventory, host):
            add("error", host, key, f"groups {', '.join(groups)} set different values (pyinfra silently takes "
                                    f"{winner}'s): set {key} on the host in {inventory_path}, or in one group only")
            bad.add(host.name)
        try:
            configs[host.name] = validate(host.name, fleet[host.name])
        except ConfigError as error:
            add("error", host, error.key, str(error).split(" is invalid: ", 1)[-1])
            bad.add(host.name)
        ssh_key = host.data.get("ssh_key")
        if isinstance(ssh_key, str) and not Path(ssh_key).expanduser().is_file():
            add("error", host, "ssh_key", f"no such file on the control machine ({ssh_key!r}): fix the path")
            bad.add(host.name)

    for name, config in configs.items():
        host = inventory.get_host(name)
        try:
            check_group(config, fleet)
        except ConfigError as error:
            if "has invalid data" not in str(error):  # that host's own finding says it already
                add("error", host, error.key, str(error).split(" is invalid: ", 1)[-1])
                bad.add(name)
        try:
            check_monitoring(config, list(fleet.items()))
        except ConfigError as error:
            add("error", host, error.key, str(error).split(" is invalid: ", 1)[-1])
            bad.add(name)
        if config.monitor:
            try:
                for warning in plan_monitor(config, list(fleet.items())).warnings:
                    add("warning", host, "halo_monitor", warning)
            except (ConfigError, HostRefused) as error:
                add("error", host, getattr(error, "key", None) or "halo_monitor",
                    str(error).split(" is invalid: ", 1)[-1] if isinstance(error, ConfigError) else error.reason)
                bad.add(name)
        if config.gateway:
            _check_gateway(config, inventory, host, add, bad)
        for key, message in _warnings(config):
            add("warning", host, key, message)

    for host in hosts:
        config = configs.get(host.name)
        result.hosts.append({
            "host": host.name, "groups": ", ".join(g for g in host.groups) or "-",
            "serve": config.serve if config else "-",
            "gateway": "yes" if config and config.gateway else "-",
            "status": "error" if host.name in bad else "ok",
        })
    return result


def _check_gateway(config: HaloConfig, inventory, host, add, bad: set[str]) -> None:
    try:
        groups = inventory_groups(config, inventory)
        plan = plan_gateway(config, groups)
    except (ConfigError, HostRefused) as error:
        text = str(error)
        if isinstance(error, HostRefused) and re.search(r"backend (\S+): host ", text):
            return  # a backend's own data is invalid: its own finding says so
        key = getattr(error, "key", None) or (KEY_IN_TEXT.findall(getattr(error, "reason", "")) or
                                              ["halo_gateway_groups"])[0]
        add("error", host, key, text.split(" is invalid: ", 1)[-1] if isinstance(error, ConfigError)
            else error.reason)
        bad.add(host.name)
        return
    for warning in plan.warnings:
        add("warning", host, "halo_gateway_groups", warning)


def format_table(result: CheckResult) -> str:
    columns = ("host", "groups", "serve", "gateway", "status")
    widths = {column: max(len(column), *(len(row[column]) for row in result.hosts)) for column in columns}
    lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
    lines += ["  ".join(row[column].ljust(widths[column]) for column in columns) for row in result.hosts]
    lines += [finding.line() for finding in result.findings]
    errors, warnings = len(result.errors), len(result.findings) - len(result.errors)
    lines.append(f"{len(result.hosts)} host(s): {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


class InvalidInventory(BadInput):
    """An inventory with errors: each is one line of :attr:`lines` (exit 2, no host contacted)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


def require_valid(inventory_path: str) -> None:
    """Stop before any host is contacted when the inventory has an error."""
    result = check(inventory_path)
    if result.errors:
        raise InvalidInventory([finding.line() for finding in result.errors])
