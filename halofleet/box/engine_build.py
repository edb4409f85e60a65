"""
Which llama.cpp build a host runs, read from the program itself (``llama-server --version``, or the running
engine's ``/props`` ``build_info``), and the builds halofleet refuses: a HIP build older than the gfx1151
wrong-logits fix, and an RPC group whose members run different builds or one exposed to the RPC remote-code-
execution advisory. Pure; the policy rows and their sources are in :mod:`halofleet.contract.policy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..contract import policy
from ..contract.config import HostRefused

MAX_VERSION_TEXT = 4096  # `llama-server --version` prints two lines; backend loaders may add a few
# "version: 0.7.0 (build 11669, commit Debian)" (semver builds, forky's 0.7.0) or "version: 4589 (1d1e6a90)"
# (before semver: the build number is the version).
_SEMVER_LINE = re.compile(r"^version: (\d{1,4})\.(\d{1,4})\.(\d{1,4}) \(build (\d{1,7}), commit ([^)\s]{1,64})\)$")
_BUILD_LINE = re.compile(r"^version: (\d{1,7}) \(([0-9a-f]{4,40}|[^)\s]{1,64})\)$")
_BUILD_INFO = re.compile(r"^b(\d{1,7})-([A-Za-z0-9._+-]{1,64})$")  # /props build_info: "b11669-Debian"


@dataclass(frozen=True)
class EngineBuild:
    """A llama.cpp build: ``build`` (the b-number), ``version`` (semver, builds since PR 27498) and ``commit``."""

    build: int
    version: str | None = None
    commit: str | None = None

    def __str__(self) -> str:
        text = f"b{self.build}"
        return f"{self.version} ({text})" if self.version else text


def parse_version_output(text: str) -> EngineBuild | None:
    """``llama-server --version`` output -> the build, or None when no line has one of the known shapes."""
    for line in text[:MAX_VERSION_TEXT].splitlines():
        line = line.strip()
        semver = _SEMVER_LINE.match(line)
        if semver:
            major, minor, patch, build, commit = semver.groups()
            return EngineBuild(int(build), f"{int(major)}.{int(minor)}.{int(patch)}", commit)
        plain = _BUILD_LINE.match(line)
        if plain:
            return EngineBuild(int(plain.group(1)), None, plain.group(2))
    return None


def parse_build_info(text: str) -> EngineBuild | None:
    """A running llama-server's ``/props`` ``build_info`` (``b11669-Debian``) -> the build, or None."""
    match = _BUILD_INFO.match(text.strip()[:80]) if isinstance(text, str) else None
    return EngineBuild(int(match.group(1)), None, match.group(2)) if match else None


def probed_build(probe: dict | None) -> EngineBuild | None:
    """The probe's ``llama_build`` part as an :class:`EngineBuild` (None: not installed or unreadable)."""
    found = (probe or {}).get("llama_build")
    if not isinstance(found, dict) or not isinstance(found.get("build"), int):
        return None
    return EngineBuild(found["build"], found.get("version"), found.get("commit"))


def hip_refusal(build: EngineBuild | None) -> str | None:
    """Why a HIP llama.cpp build on gfx1151 is refused (None: known to be fixed, or the build is unknown)."""
    if build is None:
        return None
    fix = policy.HIP_GFX1151_FIX
    if build.build >= fix["known_fixed_build"]:
        return None
    return (f"llama.cpp {build} on HIP gives wrong logits on gfx1151 for prompts longer than -ub (llama.cpp issue "
            f"{fix['issue']}, fixed by commit {fix['commit']} about {fix['date']}, PR {fix['pr']}); the oldest build "
            f"known to contain the fix is b{fix['known_fixed_build']} ({fix['known_fixed_version']}) [the exact "
            "first fixed build is uncertain]: use a newer build or halo_llama_backend: vulkan")


def rpc_refusal(build: EngineBuild | None) -> str | None:
    """Why a build must not take part in an RPC group because of the published RPC RCE advisory (None: fine)."""
    if build is None:
        return None
    advisory = policy.RPC_RCE_ADVISORY
    if build.build <= advisory["affected_max_build"]:
        state = f"affected (<= b{advisory['affected_max_build']})"
    elif build.build < advisory["fixed_build"]:
        state = f"not known to be fixed (affected <= b{advisory['affected_max_build']}, fixed in " \
                f"b{advisory['fixed_build']})"
    else:
        return None
    return (f"llama.cpp {build} is {state} by {advisory['id']} ({advisory['ghsa']}: remote code execution through "
            "the RPC port); update to a fixed build")


def check_builds(host: str, backend: str, serve: str, own: EngineBuild | None,
                 workers: dict[str, EngineBuild | None] | None = None) -> list[str]:
    """
    Refuse ``host`` (:class:`HostRefused`) for a HIP build older than the gfx1151 fix, or, for an RPC head or
    worker, a build under the RPC advisory; a head also when a worker runs another build. Returns warnings for
    builds that could not be read (before the first deploy installs the engine, say), which are then not judged.
    """
    warnings = []
    if serve in ("llama-server", "rpc-worker") and backend == "hip":
        reason = hip_refusal(own)
        if reason:
            raise HostRefused(host, reason)
    in_group = serve == "rpc-worker" or bool(workers)
    if in_group:
        reason = rpc_refusal(own)
        if reason:
            raise HostRefused(host, reason)
        if own is None:
            warnings.append("llama-server --version could not be read: the RPC group's build rules were not checked "
                            "(they are on the next run, once the engine is installed)")
    for name, build in sorted((workers or {}).items()):
        if build is None:
            warnings.append(f"RPC worker {name}: llama-server --version could not be read; its build is not compared")
            continue
        reason = rpc_refusal(build)
        if reason:
            raise HostRefused(host, f"RPC worker {name}: {reason}")
        if own is not None and build.build != own.build:
            raise HostRefused(host, f"RPC worker {name} runs llama.cpp {build}, this head {own}: every box of an RPC "
                                    "group must run the same build (the RPC protocol is versioned; llama.cpp issue "
                                    "26392)")
    return warnings
