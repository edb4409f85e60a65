"""
Every piece of policy data halofleet enforces, in one place, each entry beside its source.

Source tags follow ../shared/DOMAIN.md: [C] read in a primary source, [S] community/secondary, [U] uncertain.
Code that depends on a [U] entry says so and offers a host-data override.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from packaging.version import InvalidVersion, Version

GFX1151_TARGET_VERSION = 110501  # KFD gfx_target_version of the Radeon 8060S [C]
STRIX_HALO_PCI_ID = "1002:1586"  # [C]

# Memory math [C: kernel ttm docs; AMD amd-ttm tool]: ttm.pages_limit counts 4 KiB pages, amdgpu.gttsize MiB.
PAGES_PER_GIB = 262144
MIB_PER_GIB = 1024
DEFAULT_OS_RESERVE_GIB = 8  # a Nix module asserts <= 120 GiB on 128 GB: leave >= 8 GiB for the OS [S]
MIN_OS_RESERVE_GIB = 4  # below this the OS and the service itself starve; halofleet's own floor
MIN_GTT_GIB = 4  # below this no useful model fits; halofleet's own floor
# AMD's amd-ttm warns above 90 % of RAM [C]; halofleet refuses a GTT above what Linux sees (MemTotal).
GTT_WARN_FRACTION = 0.90


class Verdict(str, Enum):
    OK = "ok"
    WARN = "warn"
    BAD = "bad"


class RocmStream(str, Enum):
    """How a ROCm release is packaged: the legacy repo.radeon.com stream (rocm-core/rocm metapackages, ended at
    7.2.4) or TheRock's per-version, per-GPU-target packages (7.14+, 10.x) [C: DOMAIN.md "ROCm 7.14+ and 10.x"]."""

    LEGACY = "legacy"
    THEROCK = "therock"


@dataclass(frozen=True)
class RocmRule:
    """One row of AMD's RDNA3.5 support matrix: ROCm versions in [low, high) and the verdict per kernel kind."""

    low: str
    high: str
    with_cwsr_fix: Verdict
    without_cwsr_fix: Verdict
    source: str
    stream: RocmStream = RocmStream.LEGACY

    def matches(self, version: Version) -> bool:
        return Version(self.low) <= version < Version(self.high)


# [C: AMD rdna3-5 support matrix, as summarised in DOMAIN.md "ROCm versions"]
ROCM_MATRIX: tuple[RocmRule, ...] = (
    # 10.2 is out (AMD's vLLM compatibility page offers 10.2.0 [S]; rocm-systems PR 11712 bumps HIP to 7.17 "for
    # ROCm 10.2" [C]) but, like 10.0 and 10.1, has no row in AMD's rdna3-5 matrix [C: no 10.x row]: its verdict is
    # assumed like 7.14's [U] and says so; a release after 10.2 is unknown and warns.
    RocmRule("10.2", "10.3", Verdict.OK, Verdict.WARN, "known release (DOMAIN.md 'Refreshed 2026-12'); verdict "
             "assumed like 7.14 [U]: no AMD matrix row for 10.x", RocmStream.THEROCK),
    RocmRule("10.0", "10.2", Verdict.OK, Verdict.WARN, "assumed like 7.14 [U]: no AMD matrix row for 10.x",
             RocmStream.THEROCK),
    RocmRule("7.14", "7.15", Verdict.OK, Verdict.WARN, "AMD rdna3-5 support matrix", RocmStream.THEROCK),
    # 7.9-7.13 were TheRock releases before the production 7.14 [U: their repository is not in DOMAIN.md].
    RocmRule("7.11", "7.14", Verdict.OK, Verdict.WARN, "AMD rdna3-5 support matrix", RocmStream.THEROCK),
    RocmRule("7.9", "7.11", Verdict.BAD, Verdict.WARN, "AMD rdna3-5 support matrix; ROCm/TheRock#2991",
             RocmStream.THEROCK),
    RocmRule("7.2.1", "7.2.5", Verdict.OK, Verdict.WARN, "AMD rdna3-5 support matrix"),
    RocmRule("7.2.0", "7.2.1", Verdict.OK, Verdict.BAD, "AMD rdna3-5 support matrix"),
    RocmRule("7.1", "7.2", Verdict.BAD, Verdict.WARN, "AMD rdna3-5 support matrix; ROCm/TheRock#2991"),
    # 7.0.x sits in the same bad-VGPR range as 7.1.x [C: ROCm/TheRock#2991]; 7.0.1 is denied outright below.
    RocmRule("7.0", "7.1", Verdict.BAD, Verdict.WARN, "ROCm/TheRock#2991 (bad-VGPR range 6.x-7.1.x)"),
    RocmRule("6.4", "6.5", Verdict.BAD, Verdict.WARN, "AMD rdna3-5 support matrix"),
)

# Refused whatever the kernel, whether asked for or found installed.
ROCM_DENYLIST: dict[str, str] = {
    "7.0.1": "reported gfx1151 regression (pp 325 vs 1132 t/s on 6.4.4) and an LLVM slowdown "
    "(ROCm/rocm-systems#2865, llvm#147700) [S]",
}

# [C: kyuz0 amd-strix-halo-toolboxes#37] linux-firmware releases that break ROCm on Strix Halo.
FIRMWARE_DENYLIST: dict[str, str] = {
    "20251125": "linux-firmware 20251125 breaks ROCm on Strix Halo (kyuz0 toolboxes #37); "
    "downgrade to 20251111 and rebuild the initramfs",
}

# [C: ROCm/ROCm#5724; captures/strix-halo.md §2a, §2f, §5d-5f] MES firmware versions (amdgpu_firmware_info
# "MES feature version: N, firmware version: 0x...") with hangs and gfxhub page faults on Strix Halo: refused.
MES_FIRMWARE_DENYLIST: dict[int, str] = {
    0x83: "MES firmware 0x83 (shipped with linux-firmware 20251125) hangs and page-faults on Strix Halo "
    "(ROCm/ROCm#5724); update linux-firmware and rebuild the initramfs",
}
# MES as a minimum, not a one-value denylist: 0x86 (linux-firmware 20260309/20260410) is reported good [C], 0x88
# (upstream main) reported to fix hangs [S]. A version below this that is not denied is "not known good": a warning.
# [C: DOMAIN.md "Refreshed 2026-12"; one Nix flake pins 0x80 blobs, so older is not refused outright]
MES_FIRMWARE_MIN = 0x86

# BIOS UMA carve-out (mem_info_vram_total) above which halofleet warns. [U] The threshold is ours: GTT is sized
# from MemTotal, which the carve-out already shrinks (captures §3c: 120.9 GB visible at 8 GB vs 128.1 GB at 1 GB),
# and ROCm/llama.cpp on this APU allocate from GTT, so a large carve-out is memory models cannot use. One 128 GB box
# reads 4 GiB at its BIOS minimum (captures §3a), so only more than that is worth a warning.
VRAM_CARVEOUT_WARN_GIB = 4

# Kernel params: the names halofleet manages. Misspelled params are silently ignored by the kernel
# [C: ROCm/ROCm#5595], so every name we emit is checked against this set.
IOMMU_PARAMS = {"off": "amd_iommu=off", "pt": "iommu=pt"}  # amd_iommu=pt is invalid [C: AMD-Vi "Unknown option"]
MANAGED_PARAM_KEYS = (
    "amd_iommu",
    "iommu",
    "amdgpu.gttsize",
    "ttm.pages_limit",
    "amdttm.pages_limit",
    "amd_ttm.pages_limit",
)
# The TTM module's name, as sysfs (/sys/module/<name>) shows it, in the order amd-smi probes them (rocm-systems PR
# 5290) [C]: newer amdgpu-dkms ships `amd-ttm` (file amd-ttm.ko, sysfs amd_ttm: the kernel treats - and _ alike,
# so `options amd-ttm pages_limit=N` and `amd_ttm.pages_limit=N` name the same parameter) [C]; older amdgpu-dkms
# `amdttm` [C: ROCm/ROCm#5562]; the in-tree driver `ttm`.
TTM_MODULES = ("amdttm", "amd_ttm", "ttm")
# Kernels on which amdgpu.gttsize logs its deprecation warning ("Configuring gttsize via module parameter is
# deprecated, please use ttm.pages_limit"): 7.x [C/S: DOMAIN.md "Refreshed 2026-12"]. The parameter is still
# honoured there; halo_emit_gttsize's default leaves it out on these kernels and emits it on older ones.
GTTSIZE_DEPRECATION_WARNS_FROM = 7

# [C: DOMAIN.md "CWSR check"] Both properties must be exported on a gfx1151 KFD node.
CWSR_PROPERTIES = ("cwsr_size", "ctl_stack_size")

# ROCm apt repository [C: DOMAIN.md "ROCm versions"]; the URL is host data so mirrors and test repos work.
ROCM_APT_URL_TEMPLATE = "https://repo.radeon.com/rocm/apt/{version}"
ROCM_APT_SUITE = "noble"  # [C] Ubuntu 24.04 classic repo; other distros set halo_rocm_repo_suite
ROCM_APT_KEY_URL = "https://repo.radeon.com/rocm/rocm.gpg.key"  # [C] ASCII-armored
ROCM_LEGACY_LAST = "7.2.4"  # [C] the legacy stream ended here
# Legacy packages AMD says to remove before installing TheRock packages [C: DOMAIN.md]; purging rocm-core takes
# every package that depends on it (the metapackages, the libraries) with it.
ROCM_LEGACY_CORE = "rocm-core"


@dataclass(frozen=True)
class TheRockRepo:
    """Where one TheRock release line is published [C: DOMAIN.md "ROCm 7.14+ and 10.x"]."""

    url: str  # with {suite_dir}
    suite: str
    key_url: str  # binary (dearmored) OpenPGP keyring: apt reads it directly through signed-by
    deb822: bool  # AMD documents 7.14 as a one-line source and 10.x as a deb822 file
    source: str


THEROCK_REPOS: dict[int, TheRockRepo] = {
    7: TheRockRepo("https://repo.amd.com/rocm/packages-multi-arch/{suite_dir}", "stable",
                   "https://repo.amd.com/rocm/packages-multi-arch/gpg/rocm.gpg", False,
                   "ROCm install docs for 7.14 [C]"),
    # 10.1 uses 10.0's repository layout (rocm-docs hpc-sdk/include/rocm10.1.0-install.rst [C]); 10.2's
    # install page was not read: it is assumed to follow [U].
    10: TheRockRepo("https://stable.repo.amd.com/rocm/core/packages/{suite_dir}/", "stable",
                    "https://stable.repo.amd.com/rocm/gpg/packages.gpg", True, "ROCm install docs for 10.0 [C]"),
}
# The suite directories AMD publishes TheRock packages for [C: DOMAIN.md], by os-release (ID, VERSION_ID).
THEROCK_SUITE_DIRS: dict[tuple[str, str], str] = {
    ("ubuntu", "22.04"): "ubuntu2204",
    ("ubuntu", "24.04"): "ubuntu2404",
    ("ubuntu", "26.04"): "ubuntu2604",
    ("debian", "12"): "debian12",
    ("debian", "13"): "debian13",
}
# Per-target packages: the runtime, then the optional dev/sdk sets [C: DOMAIN.md]. {xy} is X.Y, {target} gfxNNNN.
THEROCK_PACKAGE = "amdrocm{xy}-{target}"
THEROCK_PACKAGE_PATTERN = re.compile(r"amdrocm(?:-[a-z]+(?:-[a-z]+)*)?(\d+\.\d+)-(gfx[0-9a-f]{3,5})")
THEROCK_PREFIX = "/opt/rocm/core"  # update-alternatives link to /opt/rocm/core-X.Y [C]
# Debian policy 5.6.1: package names are [a-z0-9][a-z0-9+.-]+ (at least two characters).
DEBIAN_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
ROCM_PIN_ORIGIN = "repo.radeon.com"
ROCM_PIN_PRIORITY = 600  # [C] AMD's own rocm-pin-600

# Every apt-get halofleet runs waits this long for another apt/dpkg (unattended-upgrades, an admin) to release
# the dpkg lock instead of failing at once; halofleet's own bound.
APT_LOCK_TIMEOUT_S = 300
APT_LOCK_WAIT = f"-o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}"

# Container runtime packages per distro family.
# passwd: useradd/groupadd for the service account (minimal forky systems no longer have it).
RUNTIME_PACKAGES = {
    "podman": ("podman", "nftables", "uidmap", "passwd"),
    "docker": ("docker.io", "passwd"),
}
GPU_GROUPS = ("video", "render")  # [C] what ROCm containers need


# X.Y or X.Y.Z: ASCII digits without leading zeros, nothing around it (" 7.2.1 " and "07.2.1" are not releases).
ROCM_RELEASE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})(?:\.(0|[1-9][0-9]{0,3}))?")


def parse_rocm_version(text: str) -> Version:
    """A ROCm release as X.Y or X.Y.Z; anything else raises ValueError."""
    if not isinstance(text, str) or not ROCM_RELEASE.fullmatch(text):
        raise ValueError(f"not a ROCm release (X.Y or X.Y.Z): {text!r}")
    try:
        return Version(text)
    except InvalidVersion as error:  # pragma: no cover - the pattern above is stricter
        raise ValueError(str(error)) from error


def rocm_stream(version: str) -> RocmStream:
    """
    The packaging stream of a release: its matrix row's, else by number (the legacy stream ended at 7.2.x, so
    an unknown later release can only be TheRock's).
    """
    parsed = parse_rocm_version(version)
    for rule in ROCM_MATRIX:
        if rule.matches(parsed):
            return rule.stream
    return RocmStream.LEGACY if parsed < Version("7.3") else RocmStream.THEROCK


def rocm_series(version: str) -> str:
    """X.Y of a release (the part TheRock puts in its package names): ``7.14.1`` -> ``7.14``."""
    parsed = parse_rocm_version(version)
    return f"{parsed.major}.{parsed.minor}"


def therock_repo(version: str) -> TheRockRepo:
    """The repository of a TheRock release line; unknown majors use the newest known one [U]."""
    major = parse_rocm_version(version).major
    return THEROCK_REPOS.get(major) or THEROCK_REPOS[max(THEROCK_REPOS)]


def gfx_target(gfx_target_version: int) -> str:
    """KFD ``gfx_target_version`` to the LLVM target name: 110501 -> ``gfx1151`` (major, minor, stepping in hex)."""
    major, rest = divmod(gfx_target_version, 10000)
    minor, stepping = divmod(rest, 100)
    return f"gfx{major}{minor:x}{stepping:x}"


def rocm_release_of_package(version: str) -> str | None:
    """
    The ROCm release inside a Debian/RPM package version: ``7.2.1.70201-81~24.04`` -> ``7.2.1``; a pre-release
    such as ``7.0.1~rc1-1`` is still 7.0.1 (and so still denied). None when no X.Y[.Z] leads the version.
    """
    upstream = version.strip().split(":", 1)[-1]
    match = re.match(r"([0-9]{1,6})\.([0-9]{1,6})(?:\.([0-9]{1,6}))?", upstream)
    if not match:
        return None
    return ".".join(str(int(part)) for part in match.groups() if part is not None)


def rocm_denied(version: str) -> str | None:
    """The reason a ROCm release is refused outright, or None."""
    parsed = parse_rocm_version(version)
    for denied, reason in ROCM_DENYLIST.items():
        if parsed == Version(denied):
            return reason
    return None


def rocm_kernel_verdict(version: str, kernel_has_cwsr_fix: bool | None) -> tuple[Verdict, str]:
    """Check ROCm + kernel as a pair. ``None`` for the kernel means unknown (no KFD GPU to ask)."""
    denied = rocm_denied(version)
    if denied:
        return Verdict.BAD, f"ROCm {version} is refused: {denied}"
    parsed = parse_rocm_version(version)
    for rule in ROCM_MATRIX:
        if rule.matches(parsed):
            if kernel_has_cwsr_fix is None:
                return Verdict.WARN, f"ROCm {version}: kernel CWSR support unknown (no gfx1151 KFD node) [{rule.source}]"
            verdict = rule.with_cwsr_fix if kernel_has_cwsr_fix else rule.without_cwsr_fix
            kind = "with" if kernel_has_cwsr_fix else "without"
            return verdict, f"ROCm {version} on a kernel {kind} the CWSR fix is {verdict.value} [{rule.source}]"
    return Verdict.WARN, f"ROCm {version} is not in the support matrix halofleet knows"


def firmware_denied(version: str | None) -> str | None:
    if not version:
        return None
    for denied, reason in FIRMWARE_DENYLIST.items():
        if denied in version:
            return reason
    return None


# -- serving ---------------------------------------------------------------------------------------------------
# Images [S: kyuz0/amd-strix-halo-toolboxes 2026-08-28, d3cef36/9ff3c5e]: the llama.cpp tag rocm-7.14 was replaced
# by rocm-10.0 (rocm-6.4.4 and vulkan-amdvlk retired). Pin them by digest in production (halo_image accepts
# name@sha256:...); halofleet knows no digest (halofleet.contract.stacks.ImageRef).
LLAMA_TOOLBOX_IMAGES = {
    "vulkan": "docker.io/kyuz0/amd-strix-halo-toolboxes:vulkan-radv",  # fastest tg on Strix Halo in kyuz0's data
    "hip": "docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-10.0",
}
# [C: kyuz0 vLLM toolbox README at 378f467] ":stable" is the "last verified working build", ":latest" "may contain
# regressions". A floating tag is not reproducible across a fleet: pin with halo_image: ...@sha256:<digest> (the plan
# warns until then), and `halofleet verify` shows the digest each host actually runs.
VLLM_IMAGE = "docker.io/kyuz0/vllm-therock-gfx1151:stable"

# Debian forky/sid (and recent Ubuntu) package llama-server; the ggml GPU backends are separate packages.
LLAMA_DISTRO_PACKAGE = "llama.cpp-tools"
LLAMA_BACKEND_PACKAGES = {"vulkan": ["libggml0-backend-vulkan"], "hip": ["libggml0-backend-hip"], "cpu": []}

# llama.cpp RPC [M: DOMAIN.md "Several boxes, one model"; Debian forky's package contents]: the worker binary is in
# llama.cpp-tools-extra, outside PATH, and needs the RPC backend package; the head's llama-server needs the same
# backend package or it has no --rpc option at all.
RPC_BACKEND_PACKAGE = "libggml0-backend-rpc"
# Free space a model download leaves on its filesystem (logs, caches, the engine's own files). [U] a judgement, not a
# measured need.
DOWNLOAD_FREE_MARGIN_BYTES = 1 << 30
LLAMA_SERVER_BINARY = "/usr/bin/llama-server"  # the distro package's; its unit's ExecStart and verify's argv
RPC_WORKER_PACKAGES = ["llama.cpp-tools-extra", RPC_BACKEND_PACKAGE, "nftables"]
RPC_SERVER_BINARY = "/usr/libexec/x86_64-linux-gnu/llama/bin/ggml-rpc-server"  # x86_64 multiarch: Strix Halo
RPC_NFT_TABLE = "halofleet_rpc"  # our own table (inet family): the user's ruleset is never edited

# vLLM on gfx1151 [C: kyuz0 vllm toolbox]. HSA_OVERRIDE_GFX_VERSION is deliberately absent: not needed on
# gfx1151 and AMD calls it a hack.
VLLM_ENVIRONMENT = {
    "PYTORCH_ROCM_ARCH": "gfx1151",
    "FLASH_ATTENTION_TRITON_AMD_ENABLE": "TRUE",
    "HIP_FORCE_DEV_KERNARG": "1",
    "MIOPEN_FIND_MODE": "FAST",
    "VLLM_ROCM_USE_AITER": "0",
}
# Above 0.90 vLLM's memory cap makes the unified-memory box swap (kyuz0/amd-strix-halo-vllm-toolboxes#65).
VLLM_MAX_GPU_MEMORY_UTILIZATION = 0.90

# Environment variable each engine reads its API key from (so the key never sits on a command line).
API_KEY_ENV = {"llama-server": "LLAMA_API_KEY", "vllm": "VLLM_API_KEY"}

# RAM left outside the engine's cgroup (MemoryMax) so the OS and sshd survive an engine that overreaches.
SERVE_MEMORY_HEADROOM_GIB = 4

# Strix Halo LPDDR5X-8000 on a 256-bit bus: 256 GB/s in theory; ~215 GB/s measured (DOMAIN.md; a dense 33.3 GiB
# Q8 model at 6.3 t/s tg reads ~225 GB/s) [C]. Token generation of a dense model reads every weight per token.
STRIX_HALO_BANDWIDTH_GBS = {"theoretical": 256, "measured": 215}
# llama-bench tests (DOMAIN.md "Reference throughput"): prompt processing of 512 tokens, generation of 128.
BENCH_PROMPT_TOKENS = 512
BENCH_GEN_TOKENS = 128

# -- engine builds known to answer wrongly or to be exploitable (refused in preflight, halofleet.box.engine_build) --
# llama.cpp's HIP backend on gfx1151 gave wrong logits for prompts longer than -ub (llama.cpp issue 28211: perplexity
# 1334 vs 6.81 on CPU/Vulkan); fixed upstream by commit d4389a4d about 2026-09-08 (PR 28574's last comment), AMD's
# fork 865374bb [C: DOMAIN.md; ggml-org/llama.cpp#28574, noamsto/nix-amd-ai#128]. [U] the first build number that
# contains d4389a4d was not found; what is known: Debian forky's 0.7.0 (build 11669, released about 2026-10-17,
# after the fix) [M: `llama-server --version` in the nspawn rootfs; S: release dates in DOMAIN.md]. So 11669 is the
# oldest build *known* to be fixed, not the fix itself: an older HIP build may be fine, but nothing shows it.
HIP_GFX1151_FIX = {
    "commit": "d4389a4d", "date": "2026-09-08", "issue": 28211, "pr": 28574,
    "known_fixed_build": 11669, "known_fixed_version": "0.7.0", "exact_build": None,  # [U], see above
}
# CVE-2026-34159 (GHSA-j8rj-fmpv-wcxw, CVSS 9.8): unauthenticated remote code execution in the RPC backend's
# deserialize_tensor; affected <= b7991, fixed in b8492 (v0.4.1 / v0.5.0) [S: DOMAIN.md citing strix-halo-guide
# SECURE_LOCAL_AI.md; the same range in public CVE-gate code and advisories quoting the GHSA]. [U] builds b7992-b8491
# are named neither affected nor fixed: refused too, as not known to be fixed.
RPC_RCE_ADVISORY = {
    "id": "CVE-2026-34159", "ghsa": "GHSA-j8rj-fmpv-wcxw", "affected_max_build": 7991, "fixed_build": 8492,
    "fixed_versions": ("0.4.1", "0.5.0"),
}
# The RPC protocol is versioned since v0.5.0 and every node must run the same build (llama.cpp issue 26392) [C].
