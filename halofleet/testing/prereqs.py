"""
What ``halofleet demo`` and the VM test harness need on the control machine, checked before anything starts: one
line naming what is missing and the command that installs it on this distribution (read with ``distro``).
"""

from __future__ import annotations

import os
import shutil

import distro

# tool -> package that installs it, per distribution family (Debian's names where a family is not listed).
TOOLS: dict[str, dict[str, str]] = {
    "qemu-system-x86_64": {"debian": "qemu-system-x86", "fedora": "qemu-system-x86-core", "arch": "qemu-base"},
    "qemu-img": {"debian": "qemu-utils", "fedora": "qemu-img", "arch": "qemu-img"},
    "mmdebstrap": {"debian": "mmdebstrap", "fedora": "mmdebstrap", "arch": "mmdebstrap"},
    "mke2fs": {"debian": "e2fsprogs", "fedora": "e2fsprogs", "arch": "e2fsprogs"},
    "ssh-keygen": {"debian": "openssh-client", "fedora": "openssh", "arch": "openssh"},
}
INSTALLERS = {"debian": "apt-get install -y", "fedora": "dnf install -y", "arch": "pacman -S --needed"}

# The demo writes its tiny model with gguf (an optional extra, with numpy).
DEMO_MODULES = ("gguf", "numpy")


class MissingPrerequisite(RuntimeError):
    """What is missing on the control machine, and how to get it, in one line."""


def family(distro_id: str | None = None, like: str | None = None) -> str:
    """debian, fedora or arch for this machine's distribution (its ID, else ID_LIKE); debian when unknown."""
    ids = [distro_id if distro_id is not None else distro.id()]
    ids += (like if like is not None else distro.like()).split()
    for each in ids:
        for known, members in (("debian", ("debian", "ubuntu")), ("fedora", ("fedora", "rhel", "centos")),
                               ("arch", ("arch",))):
            if each in members:
                return known
    return "debian"


def missing_tools(which=shutil.which) -> list[str]:
    return [tool for tool in TOOLS if which(tool) is None]


def install_hint(tools: list[str], distro_family: str) -> str:
    packages = sorted({TOOLS[tool].get(distro_family, TOOLS[tool]["debian"]) for tool in tools})
    return f"{INSTALLERS[distro_family]} {' '.join(packages)}"


def check(need_root: bool = True, modules: tuple[str, ...] = ()) -> None:
    """Raise :class:`MissingPrerequisite` naming everything missing for booting the harness's VMs."""
    problems = []
    if need_root and os.geteuid() != 0:
        problems.append("root (the VM images are built with mmdebstrap as root): run it as root")
    tools = missing_tools()
    if tools:
        problems.append(f"{', '.join(tools)}: install with `{install_hint(tools, family())}`")
    absent = [name for name in modules if not _importable(name)]
    if absent:
        problems.append(f"Python modules {', '.join(absent)}: install with `pip install 'halofleet[demo]'`")
    if problems:
        raise MissingPrerequisite("missing " + "; ".join(problems))


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
