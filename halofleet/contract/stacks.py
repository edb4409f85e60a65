"""
Stack profiles: one versioned table of the whole stack a fleet runs (kernel package, linux-firmware and MES
minimum, ROCm release, llama.cpp build, engine images), every value beside its source and the date it was read,
and the releases halofleet knows of that a profile may be older than.

Source tags as in :mod:`.policy` and ../shared/DOMAIN.md: [C] read in a primary source, [S] second-hand, [U] not
confirmed. A value nobody has read is ``None`` and the code says "unknown" (no image digest is known here: see
``ImageRef``). ``halo_stack`` names a profile of :data:`PROFILES`, or is a mapping: a site's own profile (its own
kernel package, a test repository's), read by :func:`site_profile` with the same grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from .policy import DEBIAN_PACKAGE_NAME, ROCM_RELEASE

# A kernel release as uname -r and /boot/vmlinuz-<release> spell it (Debian: 6.12.57+deb13-amd64; Ubuntu:
# 7.0.0-31-generic): what GRUB's 10_linux reads from the file name, so one grammar for the plan, GRUB and the check.
KERNEL_RELEASE = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}[A-Za-z0-9.+~_-]{0,80}")
# A Debian package version (policy 5.6.12), without epochs' colon: halofleet pins with package=version.
DEBIAN_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~-]{0,80}")
FIRMWARE_DATE = re.compile(r"20[0-9]{6}")  # linux-firmware releases are dated YYYYMMDD [C]
PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
MES_MIN_TEXT = re.compile(r"0x[0-9a-fA-F]{1,8}")


@dataclass(frozen=True)
class Sourced:
    """One value of a profile with where it was read and when ([C]/[S]/[U] inside ``source``)."""

    value: Any
    source: str
    date: str  # YYYY-MM-DD the source was read (or the value released, where the source says so)


@dataclass(frozen=True)
class ImageRef:
    """
    An engine image as the profile names it: the tag it came from and, where one was read from the registry, its
    digest. No registry is reachable from here and no digest was ever read, so every row says ``digest=None``:
    halofleet then shows the digest each host resolved (``verify``'s image column) and reports hosts of one
    profile that run different digests of the same tag as drift, instead of writing a digest nobody has seen.
    """

    role: str  # "llama-vulkan" | "llama-hip" | "vllm"
    reference: str  # registry/name:tag
    digest: str | None
    source: str
    date: str

    @property
    def pinned(self) -> str:
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}" if self.digest else self.reference


@dataclass(frozen=True)
class StackProfile:
    """One row of the table: what every host of a group using ``halo_stack: <name>`` should run."""

    name: str
    date: str  # when the profile was put together
    distro: Sourced  # (os-release ID, VERSION_ID) the packages are for
    kernel_package: Sourced  # Debian/Ubuntu package carrying the kernel
    kernel_release: Sourced  # uname -r and /boot/vmlinuz-<release> of that package
    kernel_version: Sourced  # the package's Debian version (None: the newest the host's apt offers)
    kernel_cwsr_min: Sourced  # the generic kernel release from which the CWSR properties are exported
    firmware_package: Sourced  # linux-firmware (Ubuntu) or firmware-amd-graphics (Debian)
    firmware_version: Sourced  # the package version to install and hold (None: the newest offered)
    firmware_min: Sourced  # YYYYMMDD: a linux-firmware release below this is drift
    mes_min: Sourced  # lowest MES firmware version reported good
    rocm: Sourced  # ROCm release (halo_rocm_version) of the profile
    llama_build: Sourced  # the oldest llama.cpp build known to be right on gfx1151 HIP
    images: tuple[ImageRef, ...] = field(default_factory=tuple)
    site: bool = False  # a site's own profile (halo_stack as a mapping), not a row of this table

    def image(self, role: str) -> ImageRef | None:
        return next((image for image in self.images if image.role == role), None)

    def sources(self) -> dict[str, Sourced]:
        """Every sourced value by field name (the images apart)."""
        return {name: value for name, value in vars(self).items() if isinstance(value, Sourced)}


READ = "2026-12-02"  # the week DOMAIN.md "Refreshed 2026-12" was read

# Images [S: kyuz0/amd-strix-halo-toolboxes, 2026-08-28, commits d3cef36/9ff3c5e: rocm-7.14 became rocm-10.0;
# rocm-6.4.4 and vulkan-amdvlk retired] [C: kyuz0 vLLM toolbox README at 378f467: ":stable" is the last verified
# working build, ":latest" may contain regressions].
IMAGES_2026_12 = (
    ImageRef("llama-vulkan", "docker.io/kyuz0/amd-strix-halo-toolboxes:vulkan-radv", None,
             "kyuz0/amd-strix-halo-toolboxes tags after d3cef36/9ff3c5e [S]", "2026-08-28"),
    ImageRef("llama-hip", "docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-10.0", None,
             "kyuz0/amd-strix-halo-toolboxes d3cef36/9ff3c5e: rocm-7.14 replaced by rocm-10.0 [S]", "2026-08-28"),
    ImageRef("vllm", "docker.io/kyuz0/vllm-therock-gfx1151:stable", None,
             "kyuz0 vLLM toolbox README at 378f467: :stable = last verified working build [C]", READ),
)

_LLAMA_BUILD = Sourced(11669, "oldest build known to carry the gfx1151 HIP fix d4389a4d (policy.HIP_GFX1151_FIX; "
                       "Debian forky 0.7.0) [C/M]", READ)
_CWSR_MIN = Sourced("6.18.4", "DOMAIN.md 'CWSR check': generic >= 6.18.4; kyuz0: < 6.18.4 unstable [C]", READ)
_MES_MIN = Sourced(0x86, "MES 0x86 (linux-firmware 20260309/20260410) reported good, 0x83 bad [C]", READ)

PROFILES: dict[str, StackProfile] = {
    # Ubuntu 26.04: AMD lists it for the Ryzen AI Max+ 395 with kernel 7.0 [C: rocm-docs os-support]; 7.0.0-31 is a
    # kernel people run as known-good (pepuscz/strix-halo-llm) [C]. The package name follows Ubuntu's
    # linux-image-<release> convention and its Debian version was not read [U]: apt installs what it offers.
    "ubuntu-26.04-2026-12": StackProfile(
        name="ubuntu-26.04-2026-12",
        date=READ,
        distro=Sourced(("ubuntu", "26.04"), "rocm-docs os-support: Ubuntu 26.04 (kernel 7.0) for Ryzen AI Max [C]",
                       READ),
        kernel_package=Sourced("linux-image-7.0.0-31-generic",
                               "Ubuntu's linux-image-<release> naming [U]; release from pepuscz/strix-halo-llm [C]",
                               READ),
        kernel_release=Sourced("7.0.0-31-generic", "pepuscz/strix-halo-llm: Ubuntu 7.0.0-29/31 known-good [C]",
                               READ),
        kernel_version=Sourced(None, "not read: the newest version the host's apt offers [U]", READ),
        kernel_cwsr_min=_CWSR_MIN,
        firmware_package=Sourced("linux-firmware", "Ubuntu's firmware package name [C: the probe reads it]", READ),
        firmware_version=Sourced(None, "not read: the newest version the host's apt offers [U]", READ),
        firmware_min=Sourced("20260309", "linux-firmware 20260309/20260410 carry MES 0x86, reported good [C]", READ),
        mes_min=_MES_MIN,
        rocm=Sourced("10.1", "ROCm 10.1.0 released 2026-10-05, 10.0's repository layout [C: rocm-docs]", READ),
        llama_build=_LLAMA_BUILD,
        images=IMAGES_2026_12,
    ),
    # Fedora 43 + kernel 6.18.9 + linux-firmware 20260110: the known-good stack of kyuz0's README [C]. Fedora
    # hosts get drift reports; remediation (apt packages, GRUB) is for Debian/Ubuntu hosts only.
    "fedora-43-kyuz0": StackProfile(
        name="fedora-43-kyuz0",
        date=READ,
        distro=Sourced(("fedora", "43"), "kyuz0 toolboxes README: Fedora 43 [C]", READ),
        kernel_package=Sourced("kernel", "Fedora's kernel package [C]", READ),
        kernel_release=Sourced("6.18.9", "kyuz0 toolboxes README: kernel 6.18.9 [C]; Fedora's release suffix [U]",
                               READ),
        kernel_version=Sourced(None, "not read [U]", READ),
        kernel_cwsr_min=_CWSR_MIN,
        firmware_package=Sourced("linux-firmware", "Fedora's firmware package [C]", READ),
        firmware_version=Sourced(None, "not read [U]", READ),
        firmware_min=Sourced("20260110", "kyuz0 toolboxes README: firmware 20260110 [C]", READ),
        mes_min=_MES_MIN,
        rocm=Sourced(None, "the README names no host ROCm (its toolboxes carry their own) [U]", READ),
        llama_build=_LLAMA_BUILD,
        images=(
            ImageRef("llama-vulkan", "docker.io/kyuz0/amd-strix-halo-toolboxes:vulkan-radv", None,
                     "DOMAIN.md 'Containers' [C]", READ),
            ImageRef("llama-hip", "docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-7.14", None,
                     "DOMAIN.md 'Containers' [C]; the tag was retired 2026-08-28 [S]", READ),
            ImageRef("vllm", "docker.io/kyuz0/vllm-therock-gfx1151:stable", None,
                     "kyuz0 vLLM toolbox README [C]", READ),
        ),
    ),
}


@dataclass(frozen=True)
class KnownRelease:
    """A release halofleet knows of; a profile pinning something older gets a warning from ``halofleet check``."""

    what: str  # "rocm" | "firmware" | "kernel"
    version: str
    source: str
    date: str | None  # None: the release date was not read


KNOWN_RELEASES: tuple[KnownRelease, ...] = (
    KnownRelease("rocm", "10.2", "AMD's vLLM compatibility page offers rocm-ver=10.2.0 [S]; rocm-systems PR 11712 "
                 "bumps HIP to 7.17 'for ROCm 10.2' [C]; no gfx1151 matrix row", None),
    KnownRelease("rocm", "10.1", "rocm-docs 10.1.0 install page [C]", "2026-10-05"),
    KnownRelease("firmware", "20260410", "linux-firmware 20260410 carries MES 0x86 [C]", "2026-04-10"),
    KnownRelease("kernel", "7.1.3", "kyuz0's 2026-08 runs [C]", "2026-08"),
)


def newer_releases(profile: StackProfile) -> list[KnownRelease]:
    """The known releases newer than what ``profile`` pins (ROCm, firmware minimum, kernel release)."""
    newer = []
    for known in KNOWN_RELEASES:
        rocm, firmware = profile.rocm.value, profile.firmware_min.value
        if known.what == "rocm" and rocm and _version(known.version) > _version(str(rocm)):
            newer.append(known)
        elif known.what == "firmware" and firmware and known.version > str(firmware):
            newer.append(known)
        elif known.what == "kernel" and _version(known.version) > _version(str(profile.kernel_release.value)):
            newer.append(known)
    return newer


def _version(text: str) -> Version:
    """The leading X.Y[.Z] of a release as a comparable version (0 when there is none)."""
    match = re.match(r"[0-9]+(\.[0-9]+){0,2}", text)
    try:
        return Version(match.group(0)) if match else Version("0")
    except InvalidVersion:  # pragma: no cover - the pattern is stricter
        return Version("0")


def kernel_at_least(release: str, minimum: str) -> bool:
    """Whether a kernel release's X.Y.Z is at least ``minimum`` (vendors backport: the sysfs check still rules)."""
    return _version(release) >= _version(minimum)


# -- a site's own profile (halo_stack as a mapping) -------------------------------------------------------------
SITE_FIELDS = {
    # field: (required, grammar, what it is)
    "name": (True, PROFILE_NAME, "a name (lower-case letters, digits, '.' and '-')"),
    "source": (True, None, "where the values come from (your own record of the stack)"),
    "kernel_package": (True, DEBIAN_PACKAGE_NAME, "a Debian package name"),
    "kernel_release": (True, KERNEL_RELEASE, "a kernel release as in /boot/vmlinuz-<release>"),
    "kernel_version": (False, DEBIAN_VERSION, "a Debian package version"),
    "firmware_package": (False, DEBIAN_PACKAGE_NAME, "a Debian package name"),
    "firmware_version": (False, DEBIAN_VERSION, "a Debian package version"),
    "firmware_min": (False, FIRMWARE_DATE, "a linux-firmware date YYYYMMDD"),
    "mes_min": (False, MES_MIN_TEXT, "a MES firmware version such as 0x86"),
    "rocm": (False, ROCM_RELEASE, "a ROCm release X.Y or X.Y.Z"),
}


def site_profile(value: dict[str, Any]) -> StackProfile:
    """A site's own profile from ``halo_stack``'s mapping form; ValueError saying what is wrong."""
    unknown = sorted(set(value) - set(SITE_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(SITE_FIELDS)}")
    fields: dict[str, str | None] = {}
    for key, (required, grammar, what) in SITE_FIELDS.items():
        item = value.get(key)
        if item is None:
            if required:
                raise ValueError(f"field {key!r} is required ({what})")
            fields[key] = None
            continue
        if not isinstance(item, str) or not item or any(c in item for c in "\n\r\0"):
            raise ValueError(f"field {key!r} must be a one-line string ({what})")
        if grammar is not None and not grammar.fullmatch(item):
            raise ValueError(f"field {key!r}={item!r} must be {what}")
        fields[key] = item
    if fields["firmware_version"] and not fields["firmware_package"]:
        raise ValueError("field 'firmware_version' needs 'firmware_package'")
    source = f"site profile: {fields['source']}"

    def sourced(item: Any) -> Sourced:
        return Sourced(item, source, "site")

    return StackProfile(
        name=str(fields["name"]),
        date="site",
        distro=sourced(None),
        kernel_package=sourced(fields["kernel_package"]),
        kernel_release=sourced(fields["kernel_release"]),
        kernel_version=sourced(fields["kernel_version"]),
        kernel_cwsr_min=_CWSR_MIN,
        firmware_package=sourced(fields["firmware_package"]),
        firmware_version=sourced(fields["firmware_version"]),
        firmware_min=sourced(fields["firmware_min"]),
        mes_min=sourced(int(fields["mes_min"], 16) if fields["mes_min"] else None),
        rocm=sourced(fields["rocm"]),
        llama_build=_LLAMA_BUILD,
        images=(),
        site=True,
    )


def check_stack(value: Any) -> str | None:
    """``halo_stack``'s grammar (the option's check): a profile of the table, or a valid site mapping."""
    if isinstance(value, str):
        if value in PROFILES:
            return None
        return f"must be a profile of halofleet's table ({', '.join(PROFILES)}) or a mapping (a site's own profile)"
    if isinstance(value, dict):
        try:
            site_profile(value)
        except ValueError as error:
            return f"a site profile: {error}"
        return None
    return "must be a profile name or a mapping"


def resolve(value: str | dict[str, Any] | None) -> StackProfile | None:
    """The profile ``halo_stack`` selects (validated already), or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return site_profile(value)
    return PROFILES[value]
