"""
One host against its stack profile (``halo_stack``), as pure functions of the profile and the probe: the drift
(what differs, item by item, for verify and the report) and the remediation the kernel stage carries out (which
packages to install and hold, GRUB's new default, whether a reboot is needed). Nothing here talks to a host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..contract.stacks import StackProfile, kernel_at_least


# The items a host can drift in without halofleet (a reboot into another kernel, apt, apt-mark), which the
# monitor's textfile collector checks on the host too (box/exporter.py): one name for verify and the gauge.
KERNEL_ITEM, KERNEL_PACKAGE_ITEM, FIRMWARE_PACKAGE_ITEM = "kernel", "kernel package", "firmware package"


@dataclass(frozen=True)
class Drift:
    """One item of the profile: what it wants, what the host has, and whether that is a drift (None: unknown)."""

    item: str
    wanted: str
    found: str
    ok: bool | None


@dataclass(frozen=True)
class PackageStep:
    """Install (at ``version``, else apt's candidate) and hold one package."""

    package: str
    version: str | None
    install: bool  # not installed, or not at the profile's version
    hold: bool  # installed (or about to be) but not held


@dataclass
class StackPlan:
    profile: StackProfile
    drift: list[Drift]
    kernel: PackageStep | None = None
    firmware: PackageStep | None = None
    grub_entry: str | None = None  # GRUB_DEFAULT's value (submenu id>entry id) for the profile's kernel
    running_profile_kernel: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def reboot_needed(self) -> bool:
        """The profile's kernel is not the one running (GRUB's default will point at it), or new firmware is
        installed (read at boot)."""
        kernel = self.grub_entry is not None and not self.running_profile_kernel
        return kernel or bool(self.firmware and self.firmware.install)

    @property
    def drifted(self) -> list[Drift]:
        return [item for item in self.drift if item.ok is False]


def running_kernel(probe: dict[str, Any]) -> str | None:
    """
    The release of the kernel image that booted: ``BOOT_IMAGE``'s ``vmlinuz-<release>`` where GRUB passed one (the
    file name, which is what GRUB's default chooses), else ``uname -r``.
    """
    for param in probe.get("live_cmdline") or []:
        if param.startswith("BOOT_IMAGE="):
            name = os.path.basename(param.split("=", 1)[1])
            if name.startswith("vmlinuz-"):
                return name[len("vmlinuz-"):]
    return (probe.get("os") or {}).get("kernel")


def drift(profile: StackProfile, probe: dict[str, Any], image: str | None = None,
          llama_build: int | None = None) -> list[Drift]:
    """Each item of ``profile`` against the probe (``image``: the engine image the host's data asks for)."""
    stack = probe.get("stack") or {}
    packages, held = stack.get("packages") or {}, set(stack.get("held") or [])
    items: list[Drift] = []
    running = running_kernel(probe)
    wanted_kernel = str(profile.kernel_release.value)
    items.append(Drift(KERNEL_ITEM, wanted_kernel, running or "unknown", None if running is None else running ==
                       wanted_kernel))
    package = str(profile.kernel_package.value)
    state = packages.get(package)
    found = "not installed" if not state or not state["installed"] else state["version"] + (
        ", held" if package in held else ", not held")
    items.append(Drift(KERNEL_PACKAGE_ITEM, f"{package} (held)", found, bool(state and state["installed"]
                                                                          and package in held)))
    cwsr = (probe.get("cwsr") or {}).get("supported")
    items.append(Drift("CWSR", f"exported (generic >= {profile.kernel_cwsr_min.value})",
                       {True: "exported", False: "missing", None: "no gfx1151 node"}[cwsr], cwsr))
    if profile.firmware_min.value:
        date = probe.get("firmware")
        items.append(Drift("linux-firmware", f">= {profile.firmware_min.value}", date or "unknown",
                           None if date is None else date >= str(profile.firmware_min.value)))
    if profile.firmware_package.value:
        name = str(profile.firmware_package.value)
        state = packages.get(name)
        found = "not installed" if not state or not state["installed"] else state["version"] + (
            ", held" if name in held else ", not held")
        items.append(Drift(FIRMWARE_PACKAGE_ITEM, f"{name} (held)", found,
                           bool(state and state["installed"] and name in held)))
    if profile.mes_min.value is not None:
        mes = (probe.get("amdgpu") or {}).get("mes") or []
        items.append(Drift("MES", f">= {profile.mes_min.value:#x}", ", ".join(f"{v:#x}" for v in mes) or "unknown",
                           None if not mes else all(v >= profile.mes_min.value for v in mes)))
    if profile.rocm.value:
        installed = (probe.get("rocm") or {}).get("version")
        items.append(Drift("ROCm", str(profile.rocm.value), installed or "none",
                           None if not installed else installed.startswith(str(profile.rocm.value))))
    if llama_build is not None:
        items.append(Drift("llama.cpp build", f">= {profile.llama_build.value}", str(llama_build),
                           llama_build >= int(profile.llama_build.value)))
    if image:
        refs = [ref.reference for ref in profile.images]
        base = image.split("@", 1)[0]
        if refs:
            items.append(Drift("image", " or ".join(refs), image, base in refs or image in
                               [ref.pinned for ref in profile.images]))
    return items


def drift_cell(items: list[Drift]) -> str:
    """verify's ``stack`` cell: ``ok`` or the drifted items, with unknowns named."""
    bad = [f"{item.item} {item.found} (wants {item.wanted})" for item in items if item.ok is False]
    if bad:
        return "drift: " + "; ".join(bad)
    unknown = [item.item for item in items if item.ok is None]
    return "ok" + (f" ({', '.join(unknown)} unknown)" if unknown else "")


def grub_entry_for(entries: list[dict[str, str]], release: str, running: str | None) -> str | None:
    """
    GRUB_DEFAULT's value for ``/boot/vmlinuz-<release>``: its entry's id path in grub.cfg (``submenu>entry``),
    preferring the submenu's entries (the top-level one follows whichever kernel sorts newest). Before the package is
    installed the entry is not generated yet: it is derived from the running kernel's entry, whose ids
    grub-mkconfig's 10_linux builds from the release ("gnulinux-<release>-advanced-<fs uuid>").
    """
    def by_image(name: str) -> list[dict[str, str]]:
        return [entry for entry in entries if os.path.basename(entry["linux"]) == f"vmlinuz-{name}"]

    found = by_image(release)
    nested = [entry for entry in found if ">" in entry["id"] and "recovery" not in entry["id"]]
    if nested:
        return nested[0]["id"]
    if running and release != running:
        for entry in by_image(running):
            if ">" in entry["id"] and "recovery" not in entry["id"] and running in entry["id"].split(">")[-1]:
                return entry["id"].replace(running, release)
    return None


def plan_stack(profile: StackProfile, probe: dict[str, Any], apt: bool, grub: bool = True, image: str | None = None,
               llama_build: int | None = None) -> StackPlan:
    """The drift and, on apt hosts, the remediation steps of the kernel stage: the packages; GRUB's default only
    where halofleet manages the bootloader (``grub``: halo_boot manage) and it is GRUB."""
    plan = StackPlan(profile, drift(profile, probe, image, llama_build))
    running = running_kernel(probe)
    release = str(profile.kernel_release.value)
    plan.running_profile_kernel = running == release
    if not apt:
        plan.notes.append("remediation installs Debian/Ubuntu packages: this host's stack is reported only")
        return plan
    stack = probe.get("stack") or {}
    packages, held = stack.get("packages") or {}, set(stack.get("held") or [])

    def step(package: str, version: str | None) -> PackageStep:
        state = packages.get(package) or {}
        installed = bool(state.get("installed")) and (version is None or state.get("version") == version)
        return PackageStep(package, version, install=not installed, hold=package not in held)

    plan.kernel = step(str(profile.kernel_package.value), profile.kernel_version.value)
    if profile.firmware_package.value:
        firmware = step(str(profile.firmware_package.value), profile.firmware_version.value)
        date = probe.get("firmware")
        below = bool(profile.firmware_min.value) and (date is None or date < str(profile.firmware_min.value))
        plan.firmware = PackageStep(firmware.package, firmware.version, firmware.install or below, firmware.hold)
    if not grub or (probe.get("boot") or {}).get("kind") != "grub":
        if not plan.running_profile_kernel:
            plan.notes.append(f"GRUB's default is set on GRUB hosts with halo_boot: manage only: boot "
                              f"{release} by hand (its package is installed and held)")
        return plan
    entry = grub_entry_for(stack.get("grub_entries") or [], release, running)
    if entry is None or not safe_entry(entry):
        plan.notes.append(f"no GRUB entry for /boot/vmlinuz-{release} could be found or derived from the running "
                          "kernel's: the package is installed and held, the default is left as it is")
    else:
        plan.grub_entry = entry
    return plan


def safe_entry(entry: str) -> bool:
    """A menu entry id as grub-mkconfig writes them (letters, digits, ``.+~_-``, ``>`` between levels): safe inside
    double quotes in the GRUB drop-in; one grammar for the plan and the operation."""
    return bool(entry) and len(entry) <= 400 and all(c.isalnum() and c.isascii() or c in ".+~_->" for c in entry)


def remediation_hint(problem: str, profile: StackProfile | None) -> str:
    """What a refused host is told would fix it: the stack's own operation, with or without a profile set."""
    if profile is None:
        from ..contract.stacks import PROFILES

        which = f"halo_stack (a profile: {', '.join(PROFILES)}; or your own mapping)"
        firmware, kernel, minimum = "its firmware package", "its kernel package", "its minimum"
    else:
        which = f"halo_stack {profile.name}"
        firmware = str(profile.firmware_package.value or "its firmware package")
        kernel, minimum = str(profile.kernel_package.value), str(profile.firmware_min.value or "its minimum")
    if problem == "firmware":
        return f"fix: {which} installs and holds {firmware} (>= {minimum}) and reboots into it"
    return f"fix: {which} installs and holds {kernel}, makes it GRUB's default and reboots into it"


def covers(plan: StackPlan | None, problem: str) -> bool:
    """Whether this run's remediation replaces what ``problem`` ("firmware", "kernel") refers to, a reboot
    included: then the plan warns instead of refusing the host."""
    if plan is None:
        return False
    if problem == "firmware":
        return plan.firmware is not None and plan.firmware.install
    return plan.reboot_needed and plan.grub_entry is not None and kernel_at_least(
        str(plan.profile.kernel_release.value), str(plan.profile.kernel_cwsr_min.value))


def digest_drift(images: dict[str, tuple[str, str, str]]) -> dict[str, str]:
    """
    Hosts of one profile that run the same image reference (tag) at different digests: ``images`` is {host:
    (profile name, image reference as run, digest)} from what each host resolved (the table knows no digest);
    returns {host: what differs} for the hosts of a group that does not agree, naming the digests and their hosts.
    """
    groups: dict[tuple[str, str], dict[str, list[str]]] = {}
    for host, (profile, reference, digest) in images.items():
        groups.setdefault((profile, reference), {}).setdefault(digest, []).append(host)
    found = {}
    for (_, reference), digests in groups.items():
        if len(digests) < 2:
            continue
        text = "; ".join(f"{digest.removeprefix('sha256:')[:12]} on {', '.join(sorted(hosts))}"
                         for digest, hosts in sorted(digests.items()))
        for hosts in digests.values():
            for host in hosts:
                found[host] = f"image {reference} differs across the profile's hosts ({text})"
    return found
