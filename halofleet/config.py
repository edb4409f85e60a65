"""
The host-data contract: every ``halo_*`` key with its type, choices, default and doc, in one table that is also
the validation (Ansible-style ``argument_spec``).

``validate(host_name, data)`` checks everything that needs no host facts and returns a :class:`HaloConfig`; the
checks that need facts (RAM, installed ROCm, GPU) live in :mod:`halofleet.plan`. Both run before the first change.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from . import policy, validators

HIDDEN = object()  # a value never shown: unknown keys (a misspelled secret) and arguments that may hold one


class ConfigError(ValueError):
    """Bad inventory or host data. The message names host, key, value (never a secret) and what is allowed."""

    def __init__(self, host: str, key: str, value: Any, allowed: str):
        self.host, self.key, self.value, self.allowed = host, key, value, allowed
        if value is HIDDEN:
            super().__init__(f"host {host!r}: {key} is invalid: {allowed}")
            return
        shown = "<redacted>" if key in SECRET_KEYS and value is not None else repr(value)
        shown = re.sub(r"://[^/@\s]*@", "://<redacted>@", shown)  # credentials in a URL are secrets too
        super().__init__(f"host {host!r}: {key}={shown} is invalid: {allowed}")


# What parsing a host's facts raises when its output is beyond what the parsers expect: a bug to fix, but one that
# refuses that host only (never an exception that aborts the fleet run).
PARSE_FAILURES = (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeError, OverflowError)


class HostRefused(RuntimeError):
    """The host's own state (not its data) rules out the deploy."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(f"host {host!r}: {reason}")


@dataclass(frozen=True)
class Option:
    type: str  # "choice" | "bool" | "int" | "float" | "str" | "version" | "list" | "args" | "url" | "secret"
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None  # extra rule: returns the "allowed" text when it fails
    hide_value: bool = False  # refusals do not repeat the value (it may carry a secret)


SERVE_ENGINES = ("llama-server", "vllm", "none")

OPTIONS: dict[str, Option] = {
    "halo_serve": Option(
        "choice", "llama-server", "Serving engine run as a systemd service ('none': prepare the host only).",
        choices=SERVE_ENGINES,
    ),
    "halo_runtime": Option(
        "choice", "podman", "Container runtime to install; the toolbox and vLLM engines need podman (Quadlet units).",
        choices=("podman", "docker"),
    ),
    "halo_rocm_version": Option(
        "version", "none", "Host ROCm release to install and pin, or 'none' (containers carry their own ROCm).",
        check=validators.check_rocm_version,
    ),
    "halo_rocm_repo_url": Option(
        "url", None, "ROCm apt repository URL (default: AMD's repo for the release's stream and, for 7.14+/10.x, "
        "the host's suite directory; set for mirrors).", nullable=True, check=validators.check_url,
    ),
    "halo_rocm_repo_suite": Option(
        "str", None, "Legacy ROCm (<= 7.2.x): the apt suite (default noble). TheRock (7.14+, 10.x): AMD's directory "
        "(ubuntu2204, ubuntu2404, ubuntu2604, debian12, debian13; default: from the host's os-release).",
        nullable=True, check=validators.check_apt_suite,
    ),
    "halo_rocm_repo_key_url": Option(
        "url", None, "Signing key of the ROCm repository (default: AMD's key for the stream: ASCII-armored for "
        "legacy, a binary keyring for TheRock); unused with halo_rocm_repo_trusted.", nullable=True,
        check=validators.check_url,
    ),
    "halo_rocm_repo_trusted": Option(
        "bool", False, "Trust the ROCm repository without a key (local test repositories only)."
    ),
    "halo_rocm_packages": Option(
        "list", None, "Packages installed from the ROCm repository (default: rocm for legacy; amdrocmX.Y-<gpu "
        "target> for TheRock, e.g. amdrocm7.14-gfx1151; add amdrocm-core-sdkX.Y-<target> for the SDK; Debian "
        "names, optionally =version).", nullable=True, check=validators.check_packages,
    ),
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
    "halo_boot": Option(
        "choice", "manage", "Who owns the kernel cmdline: halofleet ('manage': GRUB drop-in or grubby, reboots) or "
        "'external' (containers, systemd-boot, image-built hosts: the kernel stage changes nothing and warns when the "
        "live cmdline lacks the Strix Halo parameters).", choices=("manage", "external"),
    ),
    "halo_reboot": Option(
        "choice", "auto", "Reboot when the configured cmdline differs from the live one ('never': report only).",
        choices=("auto", "never"),
    ),
    "halo_reboot_timeout": Option(
        "int", 600, "Seconds to wait for a rebooting host; one that does not come back stops the rollout.",
        minimum=30, maximum=7200,
    ),
    "halo_reboot_batch": Option(
        "int", 1, "Hosts rebooted at a time (fleet-wide: the smallest value in the inventory wins).", minimum=1,
        maximum=10000,
    ),
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
        "str", "halo", "Non-root system user that runs the engines (gets video/render).",
        check=validators.check_user_name,
    ),
    # -- serving (deploys/serve.py) --
    "halo_llama_source": Option(
        "choice", "distro", "Where llama-server comes from: the distro's llama.cpp-tools, or the toolbox image.",
        choices=("distro", "toolbox"),
    ),
    "halo_llama_backend": Option(
        "choice", "vulkan", "ggml backend for llama-server ('cpu' for test hosts without a GPU).",
        choices=("vulkan", "hip", "cpu"),
    ),
    "halo_image": Option(
        "str", None, "Container image for the toolbox/vLLM flavours (default: the kyuz0 image for the engine and "
        "backend); pin with @sha256:<digest>.", nullable=True, check=validators.check_image,
    ),
    "halo_model": Option(
        "str", None, "Model to serve: a GGUF file path on the host (llama-server), a directory on the host or a "
        "Hugging Face id (vLLM); with halo_model_push, a GGUF file on the control machine.", nullable=True,
    ),
    "halo_model_push": Option("bool", False, "Copy halo_model from the control machine into halo_model_dir."),
    "halo_model_sha256": Option(
        "str", None, "Expected SHA-256 of the model file, checked on the host before serving.", nullable=True,
        check=validators.check_sha256,
    ),
    "halo_model_dir": Option(
        "str", "/var/lib/halofleet/models", "Directory for pushed models (owned by the service user).",
        check=validators.check_absolute_path,
    ),
    "halo_bind": Option("str", "127.0.0.1", "Address the engine listens on (beyond loopback: set halo_api_key).",
                        check=validators.check_bind),
    "halo_port": Option("int", 8080, "TCP port the engine listens on.", minimum=1024, maximum=65535),
    "halo_api_key": Option(
        "secret", None, "API key clients must send; kept in a 0600 environment file, never in diffs or logs.",
        nullable=True, check=validators.check_api_key,
    ),
    "halo_allow_unauthenticated": Option(
        "bool", False, "Let the engine listen beyond loopback without an API key (otherwise refused).",
    ),
    "halo_ctx": Option("int", 8192, "Context length (llama-server -c, vLLM --max-model-len).", minimum=256,
                       maximum=1048576),
    "halo_llama_batch": Option("int", 2048, "llama-server -b (logical batch).", minimum=32, maximum=16384),
    "halo_llama_ubatch": Option("int", 512, "llama-server -ub (physical batch, <= -b).", minimum=32, maximum=16384),
    "halo_llama_parallel": Option("int", 1, "llama-server -np (slots; 1 for big models).", minimum=1, maximum=64),
    "halo_llama_kv_type": Option(
        "choice", "f16", "KV cache type for llama-server (q8_0 halves KV memory).", choices=("f16", "q8_0")
    ),
    "halo_llama_args": Option(
        "args", [], "Extra llama-server arguments, appended after halofleet's (not --host, --port, --api-key*).",
        check=lambda value: validators.check_args("halo_llama_args", value), hide_value=True,
    ),
    "halo_vllm_gpu_memory_utilization": Option(
        "float", 0.90, "vLLM --gpu-memory-utilization (above 0.90 swaps on unified memory).", minimum=0.05,
        maximum=policy.VLLM_MAX_GPU_MEMORY_UTILIZATION,
    ),
    "halo_vllm_max_num_seqs": Option("int", 8, "vLLM --max-num-seqs (concurrent sequences).", minimum=1,
                                     maximum=1024),
    "halo_vllm_dtype": Option("choice", "auto", "vLLM --dtype.", choices=("auto", "float16", "bfloat16")),
    "halo_vllm_enforce_eager": Option("bool", False, "vLLM --enforce-eager (needed for AWQ models)."),
    "halo_vllm_args": Option(
        "args", [], "Extra vLLM arguments, appended after halofleet's (not --host, --port, --api-key).",
        check=lambda value: validators.check_args("halo_vllm_args", value), hide_value=True,
    ),
    "halo_memory_max_gib": Option(
        "int", None, f"systemd MemoryMax of the engine (default: RAM minus {policy.SERVE_MEMORY_HEADROOM_GIB} GiB).",
        nullable=True, minimum=1, maximum=1024,
    ),
    "halo_start_timeout": Option(
        "int", 900, "Seconds the engine may take to become healthy (first vLLM load JIT-compiles for minutes).",
        minimum=30, maximum=7200,
    ),
    "halo_bench_repetitions": Option("int", 3, "llama-bench -r (repetitions of pp512 and tg128).", minimum=1,
                                     maximum=50),
    "halo_mem_bandwidth_gbs": Option(
        "int", policy.STRIX_HALO_BANDWIDTH_GBS["theoretical"], "Theoretical memory bandwidth (GB/s) for the roofline.",
        minimum=1, maximum=10000,
    ),
    "halo_mem_bandwidth_measured_gbs": Option(
        "int", policy.STRIX_HALO_BANDWIDTH_GBS["measured"], "Measured memory bandwidth (GB/s) for the roofline.",
        minimum=1, maximum=10000,
    ),
    "halo_devices_optional": Option(
        "bool", False, "Test hosts only: start containers even where /dev/kfd or /dev/dri is missing."
    ),
}

SECRET_KEYS = {key for key, option in OPTIONS.items() if option.type == "secret"}
HF_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
GGUF_MAGIC = b"GGUF"


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
        return ConfigError(host, key, HIDDEN if option.hide_value else value, allowed)

    if value is None:
        if option.nullable:
            return None
        raise fail("must be set (null is not allowed)")
    value = validators.coerce_type(key, option, value, fail)
    if option.check:
        problem = option.check(value)
        if problem:
            raise fail(problem)
    return value


def option_value(host: str, key: str, value: Any) -> Any:
    """One key through the contract (None: its default); ConfigError when invalid."""
    option = OPTIONS[key]
    return _coerce(host, key, option, option.default if value is None else value)


def validate(host: str, data: dict[str, Any], serving: bool = True) -> HaloConfig:
    """
    Check every ``halo_*`` key of one host's data against :data:`OPTIONS`; unknown keys get a hint.
    ``serving=False`` skips the rules between serving keys (undoing a deploy needs no model).
    """
    for key in sorted(data):
        if key.startswith("halo_") and key not in OPTIONS:
            hint = difflib.get_close_matches(key, OPTIONS, n=1)
            # The value is never shown: a misspelled halo_api_key is still a secret.
            raise ConfigError(
                host, key, HIDDEN, f"unknown key{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                "see README 'Host data'",
            )
    values = {}
    for key, option in OPTIONS.items():
        values[key] = _coerce(host, key, option, data.get(key, option.default))
    _validate_rocm(host, values)
    if serving:
        _validate_serving(host, values)
    return HaloConfig(host=host, values=values)


def _validate_rocm(host: str, values: dict[str, Any]) -> None:
    """The ROCm keys against the stream the release belongs to (TheRock: suite directory and package names)."""
    version = values["halo_rocm_version"]
    if version == "none" or policy.rocm_stream(version) is not policy.RocmStream.THEROCK:
        return
    suite_dirs = sorted(set(policy.THEROCK_SUITE_DIRS.values()))
    suite = values["halo_rocm_repo_suite"]
    if suite is not None and suite not in suite_dirs:
        raise ConfigError(host, "halo_rocm_repo_suite", suite,
                          f"ROCm {version} (TheRock) is published for {', '.join(suite_dirs)}")
    series = policy.rocm_series(version)
    for package in values["halo_rocm_packages"] or []:
        match = policy.THEROCK_PACKAGE_PATTERN.fullmatch(package)
        if not match or match.group(1) != series:
            raise ConfigError(
                host, "halo_rocm_packages", values["halo_rocm_packages"],
                f"ROCm {version} installs TheRock's per-target packages of its series, like amdrocm{series}-gfx1151 "
                f"or amdrocm-core-sdk{series}-gfx1151; {package!r} is not one",
            )


def _validate_serving(host: str, values: dict[str, Any]) -> None:
    """Rules between serving keys, and the pushed model file itself (it is on this machine: check it now)."""
    engine = values["halo_serve"]
    if engine == "none":
        return
    model = values["halo_model"]
    if model is None:
        raise ConfigError(
            host, "halo_model", None,
            f"a model is needed for halo_serve: {engine} (a path on the host, or a local file with "
            "halo_model_push: true); set halo_serve: none to prepare the host without serving",
        )
    if values["halo_llama_ubatch"] > values["halo_llama_batch"]:
        raise ConfigError(host, "halo_llama_ubatch", values["halo_llama_ubatch"],
                          f"must not exceed halo_llama_batch ({values['halo_llama_batch']})")
    if engine == "llama-server" and values["halo_llama_source"] == "toolbox" and values[
        "halo_llama_backend"
    ] == "cpu" and values["halo_image"] is None:
        raise ConfigError(host, "halo_image", None,
                          "the toolbox images are built for vulkan or hip; name an image for the cpu backend")
    in_container = engine == "vllm" or values["halo_llama_source"] == "toolbox"
    if in_container and values["halo_runtime"] != "podman":
        raise ConfigError(host, "halo_runtime", values["halo_runtime"],
                          "the toolbox and vLLM images are served by podman Quadlet units; use halo_runtime: podman "
                          "(or halo_llama_source: distro, which needs no container runtime)")
    bind = ipaddress.ip_address(values["halo_bind"])
    if not bind.is_loopback and values["halo_api_key"] is None and not values["halo_allow_unauthenticated"]:
        raise ConfigError(host, "halo_bind", values["halo_bind"],
                          "listening beyond loopback needs an API key: set halo_api_key (or "
                          "halo_allow_unauthenticated: true to serve anyone who can reach the port)")
    if values["halo_model_push"]:
        if engine == "vllm":
            raise ConfigError(host, "halo_model_push", True,
                              "pushing is for single GGUF files (llama-server); give vLLM a host path or HF id")
        problem = validators.check_file_name(PurePosixPath(model).name)
        if problem:
            raise ConfigError(host, "halo_model", model, f"the pushed file's name on the host {problem}")
        try:
            local = Path(model).expanduser()
        except RuntimeError:  # ~user that does not exist
            local = Path(model)
        if not local.is_file():
            raise ConfigError(host, "halo_model", model, "no such file on the control machine (halo_model_push)")
        with open(local, "rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ConfigError(host, "halo_model", model, "not a GGUF file (it does not start with 'GGUF')")
        return
    problem = validators.check_absolute_path(model)
    if engine == "vllm" and problem and HF_MODEL_ID.fullmatch(model):
        return
    if problem:
        hint = " or a Hugging Face id like org/name" if engine == "vllm" else ""
        raise ConfigError(host, "halo_model", model,
                          f"must be an absolute path on the host{hint} ({problem.removeprefix('must be ')})")


def options_as_dicts() -> list[dict[str, Any]]:
    """The contract as data, for ``halofleet options --json``."""
    return [
        {"key": key, "type": option.type, "default": option.default, "doc": option.doc,
         "choices": list(option.choices) or None, "minimum": option.minimum, "maximum": option.maximum,
         "nullable": option.nullable}
        for key, option in OPTIONS.items()
    ]


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
