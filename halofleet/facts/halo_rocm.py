"""
The ROCm part of the probe: which stream is installed (legacy ``rocm-core`` or TheRock's ``amdrocm*`` packages),
which release, and whether amdgpu-dkms is present. A shell command and its pure parser, tested on outputs.
"""

from __future__ import annotations

import re
from typing import Any

from packaging.version import Version

from ..contract import policy

# dpkg-query prints an error for a pattern nothing matches but still lists the other names: errors are dropped.
ROCM_COMMAND = (
    "dpkg-query -W -f='${Package} ${db:Status-Status} ${Version}\\n' rocm-core amdgpu-dkms 'amdrocm*' 2>/dev/null; "
    "command -v rpm >/dev/null 2>&1 && rpm -q --qf '@rpm %{NAME} %{VERSION}\\n' rocm-core 2>/dev/null "
    "| grep '^@rpm'; "
    "[ -r /opt/rocm/.info/version ] && echo \"@info $(cat /opt/rocm/.info/version)\"; "
    f"[ -e {policy.THEROCK_PREFIX} ] && echo \"@core $(readlink -f {policy.THEROCK_PREFIX})\"; "
    f"[ -r {policy.THEROCK_PREFIX}/.info/version ] && "
    f"echo \"@coreinfo $(head -n1 {policy.THEROCK_PREFIX}/.info/version)\"; "
    "ls -d /lib/modules/$(uname -r)/updates/dkms/amdttm.ko* 2>/dev/null | sed 's/^/@dkms /'; true"
)


def parse_dpkg_status(lines: list[str]) -> dict[str, str]:
    """``<package> <status> <version>`` lines -> {package: version} for installed packages."""
    installed = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[1] == "installed":
            installed[parts[0]] = parts[2]
    return installed


def _therock_release(packages: dict[str, str], core: str | None, coreinfo: str | None) -> str | None:
    """
    The active TheRock release: ``/opt/rocm/core/.info/version`` where present, else the runtime package of the
    series ``/opt/rocm/core`` points to (``/opt/rocm/core-X.Y``), else the newest installed runtime package.
    """
    if coreinfo:
        match = re.search(r"\d+\.\d+\.\d+", coreinfo)
        if match:
            return match.group(0)
    releases: dict[str, str] = {}  # X.Y -> X.Y.Z of the runtime package (amdrocmX.Y-gfx...)
    for name, version in packages.items():
        match = policy.THEROCK_PACKAGE_PATTERN.fullmatch(name)
        release = policy.rocm_release_of_package(version) if match else None
        if match and release and name.startswith(f"amdrocm{match.group(1)}-"):  # odd versions are skipped
            releases[match.group(1)] = release
    linked = re.search(r"/core-(\d+\.\d+)$", core or "")
    if linked and linked.group(1) in releases:
        return releases[linked.group(1)]
    if releases:
        return max(releases.values(), key=Version)
    return None


def parse_rocm(lines: list[str]) -> dict[str, Any]:
    """
    Installed ROCm: ``version`` (the active release, TheRock's when both streams are present), ``stream``,
    ``legacy`` (the rocm-core release, the one a TheRock install removes first), ``therock`` ({package:
    version} of ``amdrocm*``), ``core`` (where ``/opt/rocm/core`` points) and ``amdgpu_dkms``.
    """
    packages = parse_dpkg_status([line for line in lines if not line.startswith("@")])
    legacy = policy.rocm_release_of_package(packages["rocm-core"]) if "rocm-core" in packages else None
    tags: dict[str, str] = {}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        if tag.startswith("@") and rest.strip():
            tags.setdefault(tag, rest.strip())
    rpm = tags.get("@rpm", "").split()  # rocm-core <version>
    if legacy is None and len(rpm) > 1:
        legacy = policy.rocm_release_of_package(rpm[1])
    if legacy is None and "@info" in tags:
        legacy = policy.rocm_release_of_package(tags["@info"].split()[0])
    therock = {name: version for name, version in packages.items() if name.startswith("amdrocm")}
    core = tags.get("@core")
    therock_release = _therock_release(therock, core, tags.get("@coreinfo")) if therock or core else None
    version = therock_release or legacy
    stream = (policy.RocmStream.THEROCK.value if therock_release else
              policy.RocmStream.LEGACY.value if legacy else None)
    dkms = "amdgpu-dkms" in packages or "@dkms" in tags
    return {"version": version, "stream": stream, "legacy": legacy, "therock": therock, "core": core,
            "amdgpu_dkms": dkms, "package_version": packages.get("rocm-core")}
