"""
What the amdgpu driver says about the GPU: the BIOS carve-out (``mem_info_vram_total``), the MES firmware version
(debugfs ``amdgpu_firmware_info``, root only and only where debugfs is mounted), and the driver's faults in the
kernel log since boot. Each fact is one command and a pure parser, as in :mod:`.halo`; the probe carries the first
two in its one round trip, ``halofleet verify`` the faults.

Formats follow real Strix Halo text in ../shared/captures/strix-halo.md (§2 firmware dumps, §3 sysfs memory files,
§5 kernel log); the parser tests use those lines verbatim.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra.api import FactBase

AMDGPU_COMMAND = (
    'for f in /sys/class/drm/card*/device/mem_info_vram_total; do [ -r "$f" ] && echo "@vram $f $(cat "$f")"; done; '
    'for f in /sys/kernel/debug/dri/*/amdgpu_firmware_info; do [ -e "$f" ] || continue; '
    'if [ -r "$f" ] && cat "$f" >/dev/null 2>&1; then echo "@firmware $f"; grep "^ *MES feature version" "$f"; '
    'else echo "@unreadable $f"; fi; done; true'
)

# amdgpu's own words for a fault or hang (captures §5): GPU page faults, MES not answering, ring timeouts, resets.
FAULT_PATTERN = r"amdgpu.*(page fault|MES failed to respond|ring [^ ]+ timeout|GPU reset begin|device wedged)"
MAX_FAULT_LINES = 20
FAULTS_COMMAND = (
    "{ journalctl -k -b -o short-monotonic --no-pager 2>/dev/null || dmesg 2>/dev/null; } "
    f"| grep -E '{FAULT_PATTERN}' "
    f"| awk -v max={MAX_FAULT_LINES} '{{ kept[NR % max] = $0 }} "
    "END { print \"@count \" NR; for (i = NR - max + 1; i <= NR; i++) if (i > 0) print \"@line \" kept[i % max] }'"
)

_MES_LINE = re.compile(r"^\s*MES feature version:\s*(\d+),\s*firmware version:\s*(0x[0-9a-fA-F]{1,8})\s*$")


def parse_amdgpu(lines: list[str]) -> dict[str, Any]:
    """
    ``{"vram": {card: bytes}, "mes": [firmware versions], "firmware_info": "read" | "unreadable" | "absent"}``.
    An MES version is only believed from a line of the exact ``MES feature version: N, firmware version: 0xHEX``
    shape (``MES_KIQ`` lines are another engine's).
    """
    vram: dict[str, int] = {}
    mes: list[int] = []
    seen = "absent"
    for line in lines:
        if line.startswith("@vram "):
            parts = line.split()
            card = parts[1].split("/")[4] if len(parts) == 3 and parts[1].count("/") >= 5 else None
            if card and re.fullmatch(r"[0-9]{1,20}", parts[2]):
                vram[card] = int(parts[2])
        elif line.startswith("@firmware "):
            seen = "read"
        elif line.startswith("@unreadable ") and seen == "absent":
            seen = "unreadable"
        else:
            match = _MES_LINE.match(line)
            if match:
                mes.append(int(match.group(2), 16))
    return {"vram": vram, "mes": sorted(set(mes)), "firmware_info": seen}


def parse_faults(lines: list[str]) -> dict[str, Any]:
    """``{"count": N, "lines": [the last few]}`` of amdgpu fault lines since boot (count None: unknown)."""
    count = None
    shown = []
    for line in lines:
        if line.startswith("@count "):
            value = line[len("@count "):].strip()
            count = int(value) if re.fullmatch(r"[0-9]{1,9}", value) else None
        elif line.startswith("@line "):
            shown.append(line[len("@line "):])
    return {"count": count, "lines": shown}


class AmdgpuState(FactBase[dict]):
    """
    Per-card BIOS carve-out and the MES firmware version(s):

    .. code:: python

        {"vram": {"card1": 536870912}, "mes": [0x86], "firmware_info": "read"}
    """

    def command(self) -> str:
        return AMDGPU_COMMAND

    def process(self, output):
        return parse_amdgpu(list(output))


class AmdgpuFaults(FactBase[dict]):
    """amdgpu page faults, MES timeouts, ring timeouts and resets in the kernel log since boot (last 20 lines)."""

    def command(self) -> str:
        return FAULTS_COMMAND

    def process(self, output):
        return parse_faults(list(output))


def running_image_command(container: str) -> str:
    """The image name and digest of our running engine container (``halofleet verify``'s fleet drift check)."""
    return (f"command -v podman >/dev/null 2>&1 && podman container inspect {container} "
            "--format '@image {{.ImageName}} {{.ImageDigest}}' 2>/dev/null; true")


def parse_running_image(lines: list[str]) -> dict[str, Any] | None:
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "@image" and re.fullmatch(r"sha256:[0-9a-f]{64}", parts[2]):
            return {"name": parts[1], "digest": parts[2]}
    return None


class RunningImage(FactBase):
    """``{"name", "digest"}`` of the image the engine container runs, or None (no container engine)."""

    def command(self, container: str = "halo-serve") -> str:
        return running_image_command(container)

    def process(self, output):
        return parse_running_image(list(output))
