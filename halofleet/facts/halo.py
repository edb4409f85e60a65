"""
Facts about a Strix Halo host's kernel, boot, GPU memory, firmware and runtimes. Each fact is one shell command whose
output a pure ``parse_*`` function turns into data, so the parsers are tested on captured outputs.
:class:`~halofleet.facts.probe.HostProbe` runs them all in one round trip.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra.api import FactBase

from ..box import cmdline as cmdline_mod
from ..contract import policy
from .halo_rocm import ROCM_COMMAND, parse_rocm
from .text import ascii_int as _ascii_int

# -- pure parsers ---------------------------------------------------------------------------------------------
# A line a parser does not understand is skipped (or read as 'unknown'): one odd host never raises here.


def parse_kfd_nodes(lines: list[str]) -> list[dict[str, Any]]:
    """
    ``@node <dir>`` headers followed by that node's ``properties`` (``name value`` lines).

    Returns one dict per node: ``node``, ``gfx_target_version`` (int, 0 for CPU nodes), ``properties`` (names).
    """
    nodes: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith("@node "):
            path = line[len("@node "):].strip().rstrip("/")
            nodes.append({"node": path.rsplit("/", 1)[-1] or "?", "gfx_target_version": 0, "properties": {}})
        elif nodes and line.strip():
            name, _, value = line.strip().partition(" ")
            nodes[-1]["properties"][name] = value.strip()
            if name == "gfx_target_version" and _ascii_int(value) is not None:
                nodes[-1]["gfx_target_version"] = _ascii_int(value)
    return nodes


def cwsr_status(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """
    What Lemonade gates on: every gfx1151 KFD node must export ``cwsr_size`` and ``ctl_stack_size``.

    ``supported`` is True/False for hosts with a gfx1151 node, None when there is none (nothing to judge).
    """
    gfx1151 = [node for node in nodes if node["gfx_target_version"] == policy.GFX1151_TARGET_VERSION]
    if not gfx1151:
        return {"gfx1151_nodes": 0, "supported": None, "missing": []}
    missing = sorted({prop for node in gfx1151 for prop in policy.CWSR_PROPERTIES if prop not in node["properties"]})
    return {"gfx1151_nodes": len(gfx1151), "supported": not missing, "missing": missing}


def parse_memtotal_kib(lines: list[str]) -> int | None:
    for line in lines:
        match = re.match(r"MemTotal:\s+([0-9]{1,15})\s+kB", line)
        if match:
            return int(match.group(1))
    return None


def parse_boot_config(lines: list[str]) -> dict[str, Any]:
    """First line: bootloader kind (grub | grubby | systemd-boot | unknown); the rest: configured cmdline."""
    if not lines:
        return {"kind": "unknown", "cmdline": []}
    kind = lines[0].strip() or "unknown"
    text = " ".join(line.strip() for line in lines[1:])
    if kind == "grubby":
        # grubby --info prints args="..." for the default kernel
        match = re.search(r'args="([^"]*)"', text)
        text = match.group(1) if match else ""
    return {"kind": kind, "cmdline": cmdline_mod.parse(text)}


def parse_firmware(lines: list[str]) -> str | None:
    """The linux-firmware release date (YYYYMMDD) from the first package line that carries one."""
    for line in lines:
        match = re.search(r"(20\d{6})", line)
        if match:
            return match.group(1)
    return None


def parse_gtt(lines: list[str]) -> dict[str, Any]:
    """Live TTM/amdgpu limits: ``pages_limit``, ``gttsize`` module params and per-card ``mem_info_gtt_total`` bytes."""
    result: dict[str, Any] = {"ttm_pages_limit": None, "amdttm_pages_limit": None, "amdgpu_gttsize": None,
                              "cards": {}}
    for line in lines:
        name, _, value = line.strip().partition(" ")
        number = _ascii_int(value)
        if number is None:
            continue
        if name in ("ttm_pages_limit", "amdttm_pages_limit", "amdgpu_gttsize"):
            result[name] = number
        elif name.startswith("/sys/class/drm/") and name.split("/")[4]:
            result["cards"][name.split("/")[4]] = number
    return result


def parse_runtimes(lines: list[str]) -> dict[str, str]:
    """``<runtime> <version line>`` -> {runtime: version line}."""
    found = {}
    for line in lines:
        name, _, version = line.strip().partition(" ")
        if name in ("podman", "docker"):
            found[name] = version.strip()
    return found


def parse_os(lines: list[str]) -> dict[str, Any]:
    """``os-release`` lines plus ``@kernel <release>`` and ``@dev <path>`` lines."""
    info: dict[str, Any] = {"devices": []}
    for line in lines:
        if line.startswith("@kernel "):
            info["kernel"] = line.split(" ", 1)[1].strip()
        elif line.startswith("@dev "):
            info["devices"].append(line.split(" ", 1)[1].strip())
        elif "=" in line:
            name, _, value = line.strip().partition("=")
            info[name.lower()] = value.strip().strip("\"'")  # os-release(5): double or single quotes
    return info


# -- facts ----------------------------------------------------------------------------------------------------


class KfdNodes(FactBase[list]):
    """
    KFD topology nodes with their properties (gfx target, CWSR properties).

    .. code:: python

        [{"node": "1", "gfx_target_version": 110501, "properties": {"cwsr_size": "...", ...}}]
    """

    default = list

    def command(self) -> str:
        return (
            "for d in /sys/class/kfd/kfd/topology/nodes/*/; do "
            '[ -r "${d}properties" ] && { echo "@node $d"; cat "${d}properties"; }; done; true'
        )

    def process(self, output):
        return parse_kfd_nodes(list(output))


class MemTotal(FactBase[int]):
    """MemTotal in KiB: the RAM Linux sees (after the BIOS carve-out)."""

    def command(self) -> str:
        return "grep MemTotal: /proc/meminfo"

    def process(self, output):
        return parse_memtotal_kib(list(output))


class LiveCmdline(FactBase[list]):
    """Parameters of the running kernel (``/proc/cmdline``)."""

    default = list

    def command(self) -> str:
        return "cat /proc/cmdline"

    def process(self, output):
        return cmdline_mod.parse(" ".join(output))


# GRUB: sourced exactly as grub-mkconfig does (/etc/default/grub, then grub.d/*.cfg in order).
# Fedora: grubby on the default kernel. systemd-boot: /etc/kernel/cmdline.
BOOT_CONFIG_COMMAND = (
    "if command -v grubby >/dev/null 2>&1 && [ -d /boot/loader/entries ]; then "
    "echo grubby; grubby --info=DEFAULT 2>/dev/null | grep '^args='; "
    "elif command -v update-grub >/dev/null 2>&1 || command -v grub-mkconfig >/dev/null 2>&1; then "
    "echo grub; ( [ -r /etc/default/grub ] && . /etc/default/grub; "
    "for f in /etc/default/grub.d/*.cfg; do [ -r \"$f\" ] && . \"$f\"; done; "
    'echo "$GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT" ); '
    "elif [ -r /etc/kernel/cmdline ]; then echo systemd-boot; cat /etc/kernel/cmdline; "
    "else echo unknown; fi"
)


class BootConfig(FactBase[dict]):
    """
    Bootloader kind and the cmdline it is configured to pass.

    .. code:: python

        {"kind": "grub", "cmdline": ["console=ttyS0", "quiet", "amd_iommu=off"]}
    """

    def command(self) -> str:
        return BOOT_CONFIG_COMMAND

    def process(self, output):
        return parse_boot_config(list(output))


class RocmInstall(FactBase[dict]):
    """
    Installed ROCm (legacy rocm-core or TheRock amdrocm* packages) and whether amdgpu-dkms is installed.

    .. code:: python

        {"version": "7.14.0", "stream": "therock", "legacy": None, "therock": {"amdrocm7.14-gfx1151": "7.14.0-3"},
         "core": "/opt/rocm/core-7.14", "amdgpu_dkms": False, "package_version": None}
    """

    def command(self) -> str:
        return ROCM_COMMAND

    def process(self, output):
        return parse_rocm(list(output))


FIRMWARE_COMMAND = (
    "dpkg-query -W -f='${Package} ${db:Status-Status} ${Version}\\n' firmware-amd-graphics linux-firmware "
    "2>/dev/null | grep ' installed '; "
    "command -v rpm >/dev/null 2>&1 && rpm -q --qf '%{NAME} installed %{VERSION}\\n' linux-firmware "
    "2>/dev/null | grep ' installed '; true"
)


class LinuxFirmware(FactBase[str]):
    """linux-firmware release date (YYYYMMDD), or None."""

    def command(self) -> str:
        return FIRMWARE_COMMAND

    def process(self, output):
        return parse_firmware(list(output))


GTT_COMMAND = (
    "for p in ttm/parameters/pages_limit amdttm/parameters/pages_limit amdgpu/parameters/gttsize; do "
    "[ -r /sys/module/$p ] && echo \"$(echo ${p%%/*}_${p##*/}) $(cat /sys/module/$p)\"; done; "
    "for f in /sys/class/drm/card*/device/mem_info_gtt_total; do [ -r \"$f\" ] && echo \"$f $(cat \"$f\")\"; done; "
    "true"
)


class GttState(FactBase[dict]):
    """The GTT limits the driver actually uses (module params and per-card ``mem_info_gtt_total``)."""

    def command(self) -> str:
        return GTT_COMMAND

    def process(self, output):
        return parse_gtt(list(output))


RUNTIME_COMMAND = (
    "for c in podman docker; do command -v $c >/dev/null 2>&1 && echo \"$c $($c --version 2>/dev/null)\"; done; true"
)


class ContainerRuntimes(FactBase[dict]):
    """Container runtimes present: {name: version line}."""

    default = dict

    def command(self) -> str:
        return RUNTIME_COMMAND

    def process(self, output):
        return parse_runtimes(list(output))


OS_COMMAND = (
    "cat /etc/os-release; echo \"@kernel $(uname -r)\"; "
    "for d in /dev/kfd /dev/dri/renderD*; do [ -e \"$d\" ] && echo \"@dev $d\"; done; true"
)


class HostOs(FactBase[dict]):
    """Distro (os-release keys, lower-case), kernel release, GPU device nodes present."""

    def command(self) -> str:
        return OS_COMMAND

    def process(self, output):
        return parse_os(list(output))
