"""
What a host runs of its stack, beyond the preflight probe's other parts: kernel and firmware packages (installed,
held), GRUB's menu entries and configured default, the BIOS carve-out's sysfs files and the TTM module loaded. One
command, bounded output; :func:`parse_stack` never raises on odd lines.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra.api import FactBase

from ..contract import policy
from .text import ascii_int

# dpkg's db:Status-Abbrev is two or three letters: desired (i, h hold, r, p, u), status (i installed, n, c ...).
STACK_COMMAND = (
    "dpkg-query -W -f='@pkg ${Package} ${db:Status-Abbrev} ${Version}\\n' 'linux-image-*' linux-firmware "
    "firmware-amd-graphics 2>/dev/null | head -n 400; "
    "command -v apt-mark >/dev/null 2>&1 && apt-mark showhold 2>/dev/null | head -n 400 | sed 's/^/@hold /'; "
    "[ -r /boot/grub/grub.cfg ] && grep -E '^[[:space:]]*(submenu|menuentry|function|linux|[}])' "
    "/boot/grub/grub.cfg | head -n 4000 | sed 's/^/@grub /'; "
    "( [ -r /etc/default/grub ] && . /etc/default/grub; for f in /etc/default/grub.d/*.cfg; do "
    '[ -r "$f" ] && . "$f"; done; echo "@default $GRUB_DEFAULT" ); '
    "for f in /sys/class/drm/card*/device/uma/carveout; do [ -r \"$f\" ] && "
    "echo \"@carveout $f $(head -c 64 \"$f\")\"; done; "
    "for f in /sys/class/drm/card*/device/uma/carveout_options; do [ -r \"$f\" ] && "
    "head -n 64 \"$f\" | sed \"s|^|@option $f |\"; done; "
    "for m in " + " ".join(policy.TTM_MODULES) + "; do [ -d /sys/module/$m ] && "
    "echo \"@module $m $(cat /sys/module/$m/parameters/pages_limit 2>/dev/null)\"; done; true"
)
_MENU_ID = re.compile(r"\$menuentry_id_option\s+'([^']{1,200})'")
_OPTION = re.compile(r"\s*(\d{1,3}):.*\((\d{1,6}) (MB|GB)\)\s*")  # "0: Minimum (512 MB)" [S: a public parser]


def parse_grub_entries(lines: list[str]) -> list[dict[str, str]]:
    """
    grub.cfg's ``menuentry``/``submenu``/``linux`` lines (and the ``}`` that close them) to the entries GRUB can
    boot: ``{"id": "<submenu id>><entry id>" or "<entry id>", "linux": "/boot/vmlinuz-..."}``, in file order.
    """
    entries: list[dict[str, str]] = []
    stack: list[tuple[str, str | None]] = []  # (kind, id) of the open blocks
    for line in lines:
        text = line.strip()
        if text.startswith(("submenu", "menuentry", "function")) and text.endswith("{"):
            match = _MENU_ID.search(text)
            kind = text.split(None, 1)[0]
            stack.append((kind, match.group(1) if match else None))
        elif text == "}" and stack:
            stack.pop()
        elif text.startswith("linux") and stack and stack[-1][0] == "menuentry" and stack[-1][1]:
            parts = text.split()
            if len(parts) >= 2:
                path = [block_id for kind, block_id in stack if kind in ("submenu", "menuentry")]
                if all(path):
                    entries.append({"id": ">".join(path), "linux": parts[1]})
    return entries


def parse_stack(lines: list[str]) -> dict[str, Any]:
    """
    The STACK_COMMAND's lines.

    .. code:: python

        {"packages": {"linux-image-6.12.57+deb13-amd64": {"version": "6.12.57-1", "installed": True}},
         "held": ["linux-image-..."], "grub_entries": [{"id": "gnulinux-advanced-U>gnulinux-6.12...", "linux":
         "/boot/vmlinuz-6.12..."}], "grub_default": "0",
         "carveout": {"/sys/class/drm/card1/device/uma/carveout": 3}, "carveout_options": {path: {0: 512, ...}},
         "ttm_modules": {"ttm": 31457280}}
    """
    result: dict[str, Any] = {"packages": {}, "held": [], "grub_entries": [], "grub_default": None,
                              "carveout": {}, "carveout_options": {}, "ttm_modules": {}}
    grub: list[str] = []
    for line in lines:
        tag, _, rest = line.rstrip("\n").partition(" ")
        if tag == "@pkg":
            parts = rest.split()
            if len(parts) == 3 and policy.DEBIAN_PACKAGE_NAME.fullmatch(parts[0]):
                result["packages"][parts[0]] = {"version": parts[2], "installed": parts[1][1:2] == "i"}
        elif tag == "@hold" and policy.DEBIAN_PACKAGE_NAME.fullmatch(rest.strip()):
            result["held"].append(rest.strip())
        elif tag == "@grub":
            grub.append(rest)
        elif tag == "@default":
            result["grub_default"] = rest.strip() or None
        elif tag == "@carveout":
            path, _, value = rest.partition(" ")
            result["carveout"][path] = ascii_int(value.strip())
        elif tag == "@option":
            path, _, option = rest.partition(" ")
            match = _OPTION.fullmatch(option)
            if match:
                size = int(match.group(2)) * (1024 if match.group(3) == "GB" else 1)
                result["carveout_options"].setdefault(path.rsplit("_options", 1)[0], {})[int(match.group(1))] = size
        elif tag == "@module":
            name, _, value = rest.partition(" ")
            if name in policy.TTM_MODULES:
                result["ttm_modules"][name] = ascii_int(value.strip())
    result["grub_entries"] = parse_grub_entries(grub)
    return result


class StackState(FactBase[dict]):
    """Kernel/firmware packages and holds, GRUB entries and default, carve-out files, TTM module (see
    :func:`parse_stack`)."""

    def command(self) -> str:
        return STACK_COMMAND

    def process(self, output):
        return parse_stack(list(output))
