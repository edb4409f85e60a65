"""
The host-data contract: every ``halo_*`` key with its type, choices, default and doc, in one table that is also
the validation (Ansible-style ``argument_spec``).

``validate(host_name, data)`` checks everything that needs no host facts and returns a :class:`HaloConfig`; the
checks that need facts (RAM, installed ROCm, GPU) live in :mod:`halofleet.plan`. Both run before the first change.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable

from . import policy

TRUE_WORDS = {"true", "yes", "1", "on"}
FALSE_WORDS = {"false", "no", "0", "off"}


class ConfigError(ValueError):
    """Bad inventory or host data. The message names host, key, value and what is allowed."""

    def __init__(self, host: str, key: str, value: Any, allowed: str):
        self.host, self.key, self.value, self.allowed = host, key, value, allowed
        super().__init__(f"host {host!r}: {key}={value!r} is invalid: {allowed}")


class HostRefused(RuntimeError):
    """The host's own state (not its data) rules out the deploy."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(f"host {host!r}: {reason}")


@dataclass(frozen=True)
class Option:
    type: str  # "choice" | "bool" | "int" | "str" | "version" | "list" | "url"
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None  # extra rule: returns the "allowed" text when it fails



def _check_rocm_version(value: str) -> str | None:
    if value == "none":
        return None
    try:
        policy.parse_rocm_version(value)
    except ValueError:
        return "must be 'none' or a ROCm release like 7.2.1 (X.Y or X.Y.Z)"
    reason = policy.rocm_denied(value)
    if reason:
        return f"ROCm {value} is refused: {reason}"
    return None


def _check_user_name(value: str) -> str | None:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", value) or value == "root":
        return "must be a non-root system user name ([a-z_][a-z0-9_-]*, at most 31 characters)"
    return None


OPTIONS: dict[str, Option] = {
    "halo_serve": Option(
        "choice", "llama-server", "Serving engine the host is prepared for.", choices=("llama-server", "vllm", "none")
    ),
    "halo_runtime": Option("choice", "podman", "Container runtime to install.", choices=("podman", "docker")),
    "halo_rocm_version": Option(
        "version", "none", "Host ROCm release to install and pin, or 'none' (containers carry their own ROCm).",
        check=_check_rocm_version,
    ),
    "halo_rocm_repo_url": Option(
        "url", None, "ROCm apt repository URL (default: AMD's repo for the pinned release; set for mirrors).",
        nullable=True,
    ),
    "halo_rocm_repo_suite": Option("str", policy.ROCM_APT_SUITE, "Suite of the ROCm apt repository."),
    "halo_rocm_repo_key_url": Option(
        "url", "https://repo.radeon.com/rocm/rocm.gpg.key",
        "ASCII-armored signing key of the ROCm repository; null only with halo_rocm_repo_trusted.", nullable=True,
    ),
    "halo_rocm_repo_trusted": Option(
        "bool", False, "Trust the ROCm repository without a key (local test repositories only)."
    ),
    "halo_rocm_packages": Option("list", ["rocm"], "Packages installed from the ROCm repository."),
    "halo_gtt_gib": Option(
        "int", None, "GTT size in GiB (default: MemTotal minus halo_os_reserve_gib).", nullable=True, minimum=1,
        maximum=1024,
    ),
    "halo_os_reserve_gib": Option(
        "int", policy.DEFAULT_OS_RESERVE_GIB, "GiB of RAM kept out of GTT for the OS.",
        minimum=policy.MIN_OS_RESERVE_GIB, maximum=1024,
    ),
    "halo_iommu": Option(
        "choice", "off", "IOMMU mode: 'off' (amd_iommu=off, faster, disables the NPU) or 'pt' (iommu=pt).",
        choices=("off", "pt"),
    ),
    "halo_cwsr_policy": Option(
        "choice", "enforce", "Without kernel CWSR support: 'enforce' refuses vLLM, 'warn' only reports.",
        choices=("enforce", "warn"),
    ),
    "halo_reboot": Option(
        "choice", "auto", "Reboot when the configured cmdline differs from the live one ('never': report only).",
        choices=("auto", "never"),
    ),
    "halo_reboot_timeout": Option("int", 600, "Seconds to wait for a rebooting host.", minimum=30, maximum=7200),
    "halo_emit_gttsize": Option(
        "bool", True, "Also emit the deprecated amdgpu.gttsize (always equal to ttm.pages_limit)."
    ),
    "halo_allow_non_strix_halo": Option(
        "bool", False, "Run on hosts without a gfx1151 GPU (test hosts); GPU checks report 'skipped'."
    ),
    "halo_allow_amdgpu_dkms": Option(
        "bool", False, "Accept amdgpu-dkms; the TTM params then become amdttm.* (ROCm/ROCm#5562)."
    ),
    "halo_service_user": Option(
        "str", "halo", "Non-root system user that runs the engines (gets video/render).", check=_check_user_name
    ),
}

IOMMU_REJECTED_SPELLINGS = {"amd_iommu=pt": "amd_iommu=pt is not a valid kernel option (AMD-Vi: Unknown option - 'pt')"}


@dataclass(frozen=True)
class HaloConfig:
    host: str
    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values["halo_" + name]
        except KeyError as error:
            raise AttributeError(name) from error


def _coerce(host: str, key: str, option: Option, value: Any) -> Any:
    def fail(allowed: str) -> ConfigError:
        return ConfigError(host, key, value, allowed)

    if value is None:
        if option.nullable:
            return None
        raise fail("must be set (null is not allowed)")
    kind = option.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
            return value.lower() in TRUE_WORDS
        raise fail("must be true or false")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise fail("must be a whole number")
        if isinstance(value, str):
            if not value.strip().lstrip("-").isdigit():
                raise fail("must be a whole number")
            value = int(value.strip())
        if option.minimum is not None and value < option.minimum or option.maximum is not None and value > option.maximum:
            raise fail(f"must be between {option.minimum} and {option.maximum}")
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(item, str) and item and not any(c.isspace() for c in item) for item in value
        ):
            raise fail("must be a non-empty list of package names")
        return list(value)
    if not isinstance(value, str):
        raise fail(f"must be a string, not {type(value).__name__}")
    if any(c in value for c in "\n\r\0"):
        raise fail("must be a single line")
    if kind == "choice":
        if key == "halo_iommu" and value in IOMMU_REJECTED_SPELLINGS:
            raise fail(IOMMU_REJECTED_SPELLINGS[value] + "; use 'off' (amd_iommu=off) or 'pt' (iommu=pt)")
        if value not in option.choices:
            hint = difflib.get_close_matches(value, option.choices, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise fail("must be one of " + ", ".join(option.choices) + extra)
    if kind == "url" and not value.startswith(("http://", "https://", "file:/")):
        raise fail("must be an http://, https:// or file:/ URL")
    if option.check:
        problem = option.check(value)
        if problem:
            raise fail(problem)
    return value


def validate(host: str, data: dict[str, Any]) -> HaloConfig:
    """Check every ``halo_*`` key of one host's data against :data:`OPTIONS`; unknown keys get a hint."""
    for key in sorted(data):
        if key.startswith("halo_") and key not in OPTIONS:
            hint = difflib.get_close_matches(key, OPTIONS, n=1)
            raise ConfigError(
                host, key, data[key], f"unknown key{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                "see README 'Host data'",
            )
    values = {}
    for key, option in OPTIONS.items():
        values[key] = _coerce(host, key, option, data.get(key, option.default))
    if values["halo_rocm_version"] != "none" and values["halo_rocm_repo_key_url"] is None and not values[
        "halo_rocm_repo_trusted"
    ]:
        raise ConfigError(
            host, "halo_rocm_repo_key_url", None, "a signing key URL is needed unless halo_rocm_repo_trusted is true"
        )
    return HaloConfig(host=host, values=values)


def describe_options() -> str:
    """Markdown table of the contract, for the README and ``halofleet options``."""
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key, option in OPTIONS.items():
        if option.choices:
            allowed = " \\| ".join(option.choices)
        elif option.minimum is not None:
            allowed = f"{option.minimum}..{option.maximum}"
        else:
            allowed = ""
        rows.append(f"| `{key}` | {option.type} | `{option.default!r}` | {allowed} | {option.doc} |")
    return "\n".join(rows)
