"""
What the ROCm stage writes for one host, decided from its validated data and probe: the stream (legacy or
TheRock), the source (URL, suite, key, format), the packages, the pin, and whether the legacy stack must go first.
A pure function, so every stream, suite and refusal is tested without a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract import policy, validators
from ..contract.config import ConfigError, HaloConfig
from ..contract.paths import (
    ROCM_KEY,
    ROCM_KEY_THEROCK,
    ROCM_KEY_THEROCK_STABLE,
    ROCM_LIST,
    ROCM_REPO_FILES,
    ROCM_SOURCES,
)

# Legacy packages held by the pin: every ROCm package depends on an exact rocm-core, so these hold the stack.
LEGACY_PIN_PACKAGES = ("rocm-core", "rocm", "rocm-dev", "rocm-libs", "rocm-hip-runtime", "rocm-hip-sdk")


@dataclass(frozen=True)
class RocmPlan:
    version: str
    stream: policy.RocmStream
    url: str
    suite: str  # the apt suite (``noble``; ``stable`` for TheRock)
    suite_dir: str | None  # TheRock: the distro directory of AMD's repository (``ubuntu2404``)
    key_url: str | None  # None: a trusted (local test) repository
    key_path: str
    key_binary: bool  # TheRock keys are binary keyrings; the legacy one is ASCII-armored
    sources_path: str
    deb822: bool
    packages: list[str]
    pin_packages: list[str]
    pin_version: str  # the apt_preferences version glob
    target: str  # the GPU target of TheRock's per-target packages
    installed: str | None  # the installed release of this plan's stream
    installed_packages: dict[str, str]  # TheRock: {package: Debian version} of amdrocm* installed now
    remove_legacy: str | None  # legacy release to remove before a TheRock install
    stale_files: tuple[str, ...]  # the other streams' sources and keys, removed

    @property
    def therock(self) -> bool:
        return self.stream is policy.RocmStream.THEROCK


def suite_dir_of(os_info: dict[str, Any]) -> str | None:
    """AMD's TheRock directory for the host's os-release (``ubuntu`` 24.04 -> ``ubuntu2404``), or None."""
    return policy.THEROCK_SUITE_DIRS.get((os_info.get("id", ""), os_info.get("version_id", "")))


def therock_pin_version(version: str) -> str:
    """``7.14.1`` -> ``7.14.1-*`` (that patch level, any Debian revision); ``7.14`` -> ``7.14.*`` (the series)."""
    parsed = policy.parse_rocm_version(version)
    if len(version.split(".")) == 3:
        return f"{parsed.major}.{parsed.minor}.{parsed.micro}-*"
    return f"{parsed.major}.{parsed.minor}.*"


def gpu_target(probe: dict[str, Any]) -> str:
    """The target of the host's gfx1151 KFD node; gfx1151 on hosts allowed without one (test hosts)."""
    for node in probe.get("kfd_nodes") or []:
        if node.get("gfx_target_version") == policy.GFX1151_TARGET_VERSION:
            return policy.gfx_target(node["gfx_target_version"])
    return policy.gfx_target(policy.GFX1151_TARGET_VERSION)


def plan_rocm(config: HaloConfig, probe: dict[str, Any]) -> RocmPlan | None:
    """The ROCm stage's plan for a host that asks for a release (None for ``halo_rocm_version: none``)."""
    plan = _plan_rocm(config, probe)
    return plan and _checked(config, plan)


def _checked(config: HaloConfig, plan: RocmPlan) -> RocmPlan:
    """
    What the ROCm operations re-check, through the grammars they use (:mod:`halofleet.operations.halo_rocm`):
    a value one of them would refuse mid-run (stopping every host) refuses this host now, in preflight.
    """
    checks = (
        ("halo_rocm_repo_url", plan.url, validators.check_apt_url(plan.url)),
        ("halo_rocm_repo_key_url", plan.key_url, plan.key_url and validators.check_url(plan.key_url)),
        ("halo_rocm_repo_suite", plan.suite, validators.check_apt_suite(plan.suite)),
        ("halo_rocm_packages", plan.packages, validators.check_packages(plan.packages)
         if not plan.therock else validators.check_package_names(plan.packages)),
        ("halo_rocm_packages", plan.pin_packages, validators.check_package_names(plan.pin_packages)),
        ("halo_rocm_version", plan.version, None if validators.ROCM_RELEASE.fullmatch(plan.version)
         else "must be a ROCm release like 7.2.1"),
    )
    for key, value, problem in checks:
        if problem:
            raise ConfigError(config.host, key, value, problem)
    return plan


def _plan_rocm(config: HaloConfig, probe: dict[str, Any]) -> RocmPlan | None:
    version = config.rocm_version
    if version == "none":
        return None
    rocm = probe.get("rocm") or {}
    stream = policy.rocm_stream(version)
    key_url = None if config.rocm_repo_trusted else config.rocm_repo_key_url
    if stream is policy.RocmStream.LEGACY:
        return RocmPlan(
            version=version, stream=stream,
            url=config.rocm_repo_url or policy.ROCM_APT_URL_TEMPLATE.format(version=version),
            suite=config.rocm_repo_suite or policy.ROCM_APT_SUITE, suite_dir=None,
            key_url=None if config.rocm_repo_trusted else key_url or policy.ROCM_APT_KEY_URL,
            key_path=ROCM_KEY, key_binary=False, sources_path=ROCM_SOURCES, deb822=True,
            packages=config.rocm_packages or ["rocm"], pin_packages=list(LEGACY_PIN_PACKAGES),
            pin_version=f"{version}.*", target=gpu_target(probe),
            installed=rocm.get("legacy"), installed_packages={}, remove_legacy=None,
            stale_files=tuple(path for path in ROCM_REPO_FILES if path not in (ROCM_SOURCES, ROCM_KEY)),
        )

    suite_dir = config.rocm_repo_suite or suite_dir_of(probe.get("os") or {})
    if suite_dir is None:
        os_info = probe.get("os") or {}
        shown = os_info.get("pretty_name") or f"{os_info.get('id', '?')} {os_info.get('version_id', '?')}"
        raise ConfigError(
            config.host, "halo_rocm_repo_suite", None,
            f"AMD publishes ROCm {version} for {', '.join(sorted(set(policy.THEROCK_SUITE_DIRS.values())))}, "
            f"and this host runs {shown!r}: set halo_rocm_repo_suite to the directory to use",
        )
    repo = policy.therock_repo(version)
    target = gpu_target(probe)
    series = policy.rocm_series(version)
    packages = config.rocm_packages or [policy.THEROCK_PACKAGE.format(xy=series, target=target)]
    key_path = ROCM_KEY_THEROCK_STABLE if repo.deb822 else ROCM_KEY_THEROCK
    sources_path = ROCM_SOURCES if repo.deb822 else ROCM_LIST
    installed_packages = dict(rocm.get("therock") or {})
    runtime = policy.THEROCK_PACKAGE.format(xy=series, target=target)
    installed = (policy.rocm_release_of_package(installed_packages[runtime])
                 if runtime in installed_packages else None)
    return RocmPlan(
        version=version, stream=stream,
        url=config.rocm_repo_url or repo.url.format(suite_dir=suite_dir),
        suite=repo.suite, suite_dir=suite_dir,
        key_url=None if config.rocm_repo_trusted else key_url or repo.key_url,
        key_path=key_path, key_binary=True, sources_path=sources_path, deb822=repo.deb822,
        packages=packages, pin_packages=sorted({runtime, *packages}), pin_version=therock_pin_version(version),
        target=target, installed=installed, installed_packages=installed_packages,
        remove_legacy=rocm.get("legacy") if rocm.get("package_version") else None,
        stale_files=tuple(path for path in ROCM_REPO_FILES if path not in (sources_path, key_path)),
    )
