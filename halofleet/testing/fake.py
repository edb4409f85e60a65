"""
Run a deploy file through pyinfra's ``@fake`` connector with canned facts, in-process, and report which commands
reached each host. For asserting that bad input changes nothing, and what a good host would be sent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..facts.probe import PROBE_MARK

DEBIAN_TRIXIE_OS_RELEASE = [
    'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"',
    'NAME="Debian GNU/Linux"',
    'VERSION_ID="13"',
    "ID=debian",
]


def kfd_node_lines(index: int, gfx_target_version: int, cwsr: bool) -> list[str]:
    """A KFD topology node in amdkfd's ``name value`` properties format (constructed, not captured)."""
    lines = [
        f"@node /sys/class/kfd/kfd/topology/nodes/{index}/",
        "cpu_cores_count 0",
        "simd_count 80",
        f"gfx_target_version {gfx_target_version}",
        "vendor_id 4098",
        "device_id 5510",
    ]
    if cwsr:
        lines += ["cwsr_size 2654208", "ctl_stack_size 20480"]
    return lines


def probe_output(
    memtotal_kib: int = 16_000_000,
    cmdline: str = "BOOT_IMAGE=/boot/vmlinuz root=UUID=x ro quiet",
    boot_kind: str = "grub",
    configured: str = "console=ttyS0 quiet",
    gfx1151: bool | None = None,
    rocm_core: str | None = None,
    amdgpu_dkms: bool = False,
    firmware: str | None = None,
    os_release: list[str] | None = None,
    files: dict[str, str] | None = None,
    model: list[str] | None = None,
    listeners: list[str] | None = None,
    serve_active: str = "inactive",
    sections: dict[str, list[str]] | None = None,
    rocm_lines: list[str] | None = None,
) -> list[str]:
    """The stdout HostProbe would print for a host with these properties (``gfx1151``: None = no GPU,
    True = node with CWSR properties, False = node without them). ``model`` defaults to a small GGUF file;
    ``listeners`` are /proc/net/tcp local addresses (``0100007F:1F90`` is 127.0.0.1:8080); ``rocm_lines`` are
    extra lines of the ROCm section (``amdrocm7.14-gfx1151 installed 7.14.0-3``, ``@core /opt/rocm/core-7.14``);
    ``sections`` replaces whole parts of the output verbatim (odd or hostile output for the parsers)."""
    built: dict[str, list[str]] = {
        "os": (os_release or DEBIAN_TRIXIE_OS_RELEASE) + ["@kernel 6.12.117+deb13-amd64"],
        "memtotal_kib": [f"MemTotal:       {memtotal_kib} kB"],
        "live_cmdline": [cmdline],
        "boot": [boot_kind, configured],
        "kfd_nodes": kfd_node_lines(0, 0, False) + (kfd_node_lines(1, 110501, gfx1151) if gfx1151 is not None else []),
        "rocm": [],
        "firmware": [f"firmware-amd-graphics installed {firmware}-1"] if firmware else [],
        "gtt": ["ttm_pages_limit 1835008"],
        "runtimes": ["podman podman version 5.4.2"],
        "files": [f"{digest}  {path}" for path, digest in (files or {}).items()],
        "accounts": ["root:0:0", "daemon:1:1", "@group", "root:0", "daemon:1", "video:44", "render:993"],
        "serve": [f"@active {serve_active}", "@enabled disabled"]
        + [f"@listen {address}" for address in (listeners or ["00000000:0016"])],
        "model": model if model is not None else ["@parent root 755", "@file 497440 1795442225 root",
                                                   "@magic 47475546"],
    }
    if rocm_core:
        built["rocm"].append(f"rocm-core installed {rocm_core}")
    built["rocm"] += rocm_lines or []
    if amdgpu_dkms:
        built["rocm"].append("amdgpu-dkms installed 1:6.12.12-2194681.24.04")
    parts = {**built, **(sections or {})}
    lines = []
    for name, body in parts.items():
        lines.append(PROBE_MARK + name)
        lines += body
    return lines


@dataclass
class FakeRun:
    commands: dict[str, list[str]]
    failed_hosts: set[str]
    errors: list[str] = field(default_factory=list)

    def changes(self, host: str) -> list[str]:
        """Commands other than the read-only preflight probe."""
        return [command for command in self.commands[host] if PROBE_MARK not in command]


def run_fake(deploy_file: str, hosts: dict[str, tuple[dict[str, Any], list[str]]], diff: bool = False,
             groups: dict[str, list[str]] | None = None) -> FakeRun:
    """
    Run ``deploy_file`` against fake hosts: ``{name: (host data, probe output lines)}``, optionally in inventory
    ``groups`` (``{group: [host names]}``). Returns every command each host received; a host refused by
    halofleet is in ``failed_hosts`` with its error in ``errors``.
    """
    import pyinfra
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_inventory, ctx_state
    from pyinfra_cli.util import load_deploy_file

    names = []
    for name, (data, probe_lines) in hosts.items():
        # data's own fake_responses (e.g. for a fact other than the probe) are added to the probe's
        responses = {PROBE_MARK: {"stdout": probe_lines}, "uname -s": "Linux",
                     "command -v useradd": "/usr/sbin/useradd", **data.get("fake_responses", {})}
        names.append((f"@fake/{name}", {"fake_delay": 0, **data, "fake_delay_jitter": 0,
                                         "fake_responses": responses}))
    inventory = Inventory((names, {}), **{group: ([f"@fake/{name}" for name in members], {})
                                          for group, members in (groups or {}).items()})
    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage())

    handler = Collect()
    pyinfra_logger = logging.getLogger("pyinfra")
    pyinfra_logger.addHandler(handler)
    was_cli = pyinfra.is_cli
    pyinfra.is_cli = True  # operation order from the call stack, as under the CLI (hosts may run different ops)
    try:
        with ctx_state.use(state), ctx_inventory.use(inventory):
            state.init(inventory, Config(FAIL_PERCENT=100, DIFF=diff))
            state.set_stage(StateStage.Connect)
            connect_all(state)
            try:
                state.set_stage(StateStage.Prepare)
                load_deploy_file(state, deploy_file)
                state.set_stage(StateStage.Execute)
                run_ops(state)
            except PyinfraError as error:
                errors.append(str(error))
    finally:
        pyinfra.is_cli = was_cli
        pyinfra_logger.removeHandler(handler)
    commands = {host.name.split("/", 1)[1]: list(host.connector.executed_commands) for host in inventory}
    failed = {host.name.split("/", 1)[1] for host in state.failed_hosts}
    return FakeRun(commands=commands, failed_hosts=failed, errors=errors)
