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
from pathlib import Path
from typing import Any, Callable

from . import policy

TRUE_WORDS = {"true", "yes", "1", "on"}
FALSE_WORDS = {"false", "no", "0", "off"}


class ConfigError(ValueError):
    """Bad inventory or host data. The message names host, key, value and what is allowed."""

    def __init__(self, host: str, key: str, value: Any, allowed: str):
        self.host, self.key, self.value, self.allowed = host, key, value, allowed
        shown = "<redacted>" if key in SECRET_KEYS and value is not None else repr(value)
        super().__init__(f"host {host!r}: {key}={shown} is invalid: {allowed}")


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


def _check_absolute_path(value: str) -> str | None:
    if not value.startswith("/") or any(c.isspace() for c in value) or "/../" in value + "/":
        return "must be an absolute path without spaces or '..'"
    return None


def _check_bind(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address to listen on (127.0.0.1 keeps the API on the host; 0.0.0.0 for all)"
    return None


# registry[:port]/path[:tag][@sha256:digest]
IMAGE_PATTERN = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


def _check_image(value: str) -> str | None:
    if not IMAGE_PATTERN.fullmatch(value):
        return "must be a fully qualified image reference like docker.io/owner/name:tag or name@sha256:<64 hex>"
    return None


def _check_sha256(value: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-f]{64}", value) else "must be 64 lower-case hex digits"


def _check_api_key(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,512}", value):
        return "must be 16 to 512 characters from A-Z a-z 0-9 . _ ~ + / = - (no spaces, quotes or newlines)"
    return None


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
        "str", "halo", "Non-root system user that runs the engines (gets video/render).", check=_check_user_name
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
        "backend); pin with @sha256:<digest>.", nullable=True, check=_check_image,
    ),
    "halo_model": Option(
        "str", None, "Model to serve: a GGUF file path on the host (llama-server), a directory on the host or a "
        "Hugging Face id (vLLM); with halo_model_push, a GGUF file on the control machine.", nullable=True,
    ),
    "halo_model_push": Option("bool", False, "Copy halo_model from the control machine into halo_model_dir."),
    "halo_model_sha256": Option(
        "str", None, "Expected SHA-256 of the model file, checked on the host before serving.", nullable=True,
        check=_check_sha256,
    ),
    "halo_model_dir": Option(
        "str", "/var/lib/halofleet/models", "Directory for pushed models (owned by the service user).",
        check=_check_absolute_path,
    ),
    "halo_bind": Option("str", "127.0.0.1", "Address the engine listens on.", check=_check_bind),
    "halo_port": Option("int", 8080, "TCP port the engine listens on.", minimum=1024, maximum=65535),
    "halo_api_key": Option(
        "secret", None, "API key clients must send; kept in a 0600 environment file, never in diffs or logs.",
        nullable=True, check=_check_api_key,
    ),
    "halo_ctx": Option("int", 8192, "Context length (llama-server -c, vLLM --max-model-len).", minimum=256,
                       maximum=1048576),
    "halo_llama_batch": Option("int", 2048, "llama-server -b (logical batch).", minimum=32, maximum=16384),
    "halo_llama_ubatch": Option("int", 512, "llama-server -ub (physical batch, <= -b).", minimum=32, maximum=16384),
    "halo_llama_parallel": Option("int", 1, "llama-server -np (slots; 1 for big models).", minimum=1, maximum=64),
    "halo_llama_kv_type": Option(
        "choice", "f16", "KV cache type for llama-server (q8_0 halves KV memory).", choices=("f16", "q8_0")
    ),
    "halo_llama_args": Option("args", [], "Extra llama-server arguments, appended after halofleet's."),
    "halo_vllm_gpu_memory_utilization": Option(
        "float", 0.90, "vLLM --gpu-memory-utilization (above 0.90 swaps on unified memory).", minimum=0.05,
        maximum=policy.VLLM_MAX_GPU_MEMORY_UTILIZATION,
    ),
    "halo_vllm_max_num_seqs": Option("int", 8, "vLLM --max-num-seqs (concurrent sequences).", minimum=1,
                                     maximum=1024),
    "halo_vllm_dtype": Option("choice", "auto", "vLLM --dtype.", choices=("auto", "float16", "bfloat16")),
    "halo_vllm_enforce_eager": Option("bool", False, "vLLM --enforce-eager (needed for AWQ models)."),
    "halo_vllm_args": Option("args", [], "Extra vLLM arguments, appended after halofleet's."),
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
            if not re.fullmatch(r"-?[0-9]+", value.strip()):  # "--5", "²" passed isdigit(), crashed int()
                raise fail("must be a whole number")
            value = int(value.strip())
        if option.minimum is not None and value < option.minimum or option.maximum is not None and value > option.maximum:
            raise fail(f"must be between {option.minimum} and {option.maximum}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise fail("must be a number")
        try:
            value = float(value)
        except ValueError:
            raise fail("must be a number") from None
        if not option.minimum <= value <= option.maximum:
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
    if kind == "args":
        # Each item becomes one word of a systemd ExecStart/Exec line: no quoting, no specifiers, no variables.
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(item, str) and item and not any(c.isspace() or c in "%$\\\"';" for c in item)
            for item in value
        ):
            raise fail("must be a list of arguments, one word each, without spaces, quotes, '%', '$', ';' or '\\'")
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


def validate(host: str, data: dict[str, Any], serving: bool = True) -> HaloConfig:
    """
    Check every ``halo_*`` key of one host's data against :data:`OPTIONS`; unknown keys get a hint.
    ``serving=False`` skips the rules between serving keys (undoing a deploy needs no model).
    """
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
    if serving:
        _validate_serving(host, values)
    return HaloConfig(host=host, values=values)


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
    if values["halo_model_push"]:
        if engine == "vllm":
            raise ConfigError(host, "halo_model_push", True,
                              "pushing is for single GGUF files (llama-server); give vLLM a host path or HF id")
        local = Path(model).expanduser()
        if not local.is_file():
            raise ConfigError(host, "halo_model", model, "no such file on the control machine (halo_model_push)")
        with open(local, "rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ConfigError(host, "halo_model", model, "not a GGUF file (it does not start with 'GGUF')")
        return
    problem = _check_absolute_path(model)
    if engine == "vllm" and problem and HF_MODEL_ID.fullmatch(model):
        return
    if problem:
        hint = " or a Hugging Face id like org/name" if engine == "vllm" else ""
        raise ConfigError(host, "halo_model", model, f"must be an absolute path on the host{hint}")


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
