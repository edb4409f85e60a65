"""
The host-data contract: every ``halo_*`` key with its type, choices, default and doc, in one table that is also
the validation (Ansible-style ``argument_spec``).

:func:`coerce_keys` and :func:`check_rules` check everything that needs no host facts and no model entry;
:func:`halofleet.models.specs.validate` runs them with the ``halo_models`` entries checked in between and returns a
:class:`HaloConfig`. The checks that need facts (RAM, installed ROCm, GPU) live in :mod:`halofleet.box.plan`. All
run before the first change.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from . import localfiles, policy, validators
from .option_types import coerce_type
from .options import (  # noqa: F401 (re-exported: the contract is config.OPTIONS to its users)
    NO_ENDPOINT,
    OPTIONS,
    SERVE_ENGINES,
    VLLM_RAY_NOT_BUILT,
    Option,
)

HIDDEN = object()  # a value never shown: unknown keys (a misspelled secret) and arguments that may hold one


class ConfigError(ValueError):
    """Bad inventory or host data. The message names host, key, value (never a secret) and what is allowed."""

    def __init__(self, host: str, key: str, value: Any, allowed: str):
        self.host, self.key, self.value, self.allowed = host, key, value, allowed
        if value is HIDDEN:
            super().__init__(validators.mask_url_credentials(f"host {host!r}: {key} is invalid: {allowed}"))
            return
        shown = "<redacted>" if key in SECRET_KEYS and value is not None else repr(value)
        # Credentials in a URL are secrets too: masked wherever they appear in the message.
        super().__init__(validators.mask_url_credentials(f"host {host!r}: {key}={shown} is invalid: {allowed}"))


# What parsing a host's facts raises when its output is beyond what the parsers expect: a bug to fix, but one that
# refuses that host only (never an exception that aborts the fleet run).
PARSE_FAILURES = (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeError, OverflowError)


class HostRefused(RuntimeError):
    """The host's own state (not its data) rules out the deploy."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, validators.mask_url_credentials(reason)
        super().__init__(f"host {host!r}: {self.reason}")


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
    value = coerce_type(key, option, value, fail)
    if option.check:
        problem = option.check(value)
        if problem:
            raise fail(problem)
    return value


def option_value(host: str, key: str, value: Any) -> Any:
    """One key through the contract (None: its default); ConfigError when invalid."""
    option = OPTIONS[key]
    return _coerce(host, key, option, option.default if value is None else value)


def coerce_keys(host: str, data: dict[str, Any]) -> dict[str, Any]:
    """
    Every ``halo_*`` key of one host's data as its option's type, defaults filled in; unknown keys get a hint.
    ``halo_models`` stays a list of raw entries here: :mod:`halofleet.models.specs` checks them, on top of this.
    """
    for key in sorted(data):
        if key.startswith("halo_") and key not in OPTIONS:
            hint = difflib.get_close_matches(key, OPTIONS, n=1)
            # The value is never shown: a misspelled halo_api_key is still a secret.
            raise ConfigError(
                host, key, HIDDEN, f"unknown key{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                "see README 'Host data'",
            )
    return {key: _coerce(host, key, option, data.get(key, option.default)) for key, option in OPTIONS.items()}


def check_rules(host: str, values: dict[str, Any], serving: bool = True) -> HaloConfig:
    """
    The rules between keys, on values from :func:`coerce_keys` (``halo_models`` already parsed by the caller when
    it matters). ``serving=False`` skips the rules between serving keys (undoing a deploy needs no model).
    """
    if not serving:
        values = {**values, "halo_models": []}  # undoing a deploy needs no model
    _validate_rocm(host, values)
    _validate_gateway(host, values)
    if serving:
        _validate_rpc(host, values)
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


ROUTER_ARGS = ("--models-dir", "--models-preset")


def _validate_rpc(host: str, values: dict[str, Any]) -> None:
    """The RPC keys among themselves; the group (the workers' own data) is checked in :mod:`halofleet.fleet.rpc`."""
    engine, workers, address = values["halo_serve"], values["halo_rpc_workers"], values["halo_rpc_address"]
    if engine == "rpc-worker":
        if address is None:
            raise ConfigError(host, "halo_rpc_address", None,
                              "an RPC worker needs its address on the private link (ggml-rpc-server binds only it)")
        if workers:
            raise ConfigError(host, "halo_rpc_workers", workers,
                              "an RPC worker cannot have workers of its own; only a llama-server head names them")
    if not workers:
        if values["halo_tensor_split"] is not None:
            raise ConfigError(host, "halo_tensor_split", values["halo_tensor_split"],
                              "splits a model across the RPC group's devices: set halo_rpc_workers too")
        return
    if engine != "llama-server" or values["halo_llama_source"] != "distro":
        raise ConfigError(host, "halo_rpc_workers", workers,
                          "an RPC head is llama-server from the distro packages (halo_serve: llama-server, "
                          f"halo_llama_source: distro), not {engine} ({values['halo_llama_source']})")
    if host in workers:
        raise ConfigError(host, "halo_rpc_workers", workers, "a head cannot be its own worker")
    if address is None:
        raise ConfigError(host, "halo_rpc_address", None,
                          "the head needs its address on the private link: its workers' firewalls let only it in")
    if values["halo_models"]:
        raise ConfigError(host, "halo_models", HIDDEN,
                          "router mode (halo_models) serves many models on one box; it cannot be an RPC head "
                          "(halo_rpc_workers), which serves one model (halo_model) across boxes")
    router = [arg for arg in values["halo_llama_args"] if arg.split("=", 1)[0] in ROUTER_ARGS]
    if router:
        raise ConfigError(host, "halo_llama_args", HIDDEN,
                          f"router mode ({router[0].split('=', 1)[0]}) serves many models on one box; it cannot be "
                          "an RPC head (halo_rpc_workers), which serves one model (halo_model) across boxes")
    split = values["halo_tensor_split"]
    if split is not None and len(split) > len(workers) + 1:
        raise ConfigError(host, "halo_tensor_split", split,
                          f"has {len(split)} shares for {len(workers) + 1} boxes (the workers, then the head)")


def _validate_gateway(host: str, values: dict[str, Any]) -> None:
    """The gateway keys together (the backends themselves are judged from the inventory, in the gateway plan)."""
    if not values["halo_gateway"]:
        return
    if values["halo_gateway_bind"] is None:
        raise ConfigError(host, "halo_gateway_bind", None,
                          "a gateway needs an explicit listener: the address clients reach it on (127.0.0.1 keeps "
                          "it on this host)")
    routes, groups = values["halo_gateway_models"], values["halo_gateway_groups"]
    if routes is not None:
        if groups is None:
            raise ConfigError(host, "halo_gateway_models", routes,
                              "routing by model needs halo_gateway_groups (the groups the models map to)")
        unknown = sorted({group for group in routes.values() if group not in groups})
        if unknown:
            raise ConfigError(host, "halo_gateway_models", routes,
                              f"maps models to {', '.join(unknown)}, not in halo_gateway_groups {groups}")
    cert = values["halo_gateway_tls_cert"]
    if cert is not None and (not cert or any(not c.isprintable() for c in cert)):
        raise ConfigError(host, "halo_gateway_tls_cert", cert, "must be a path on the control machine")


def _validate_serving(host: str, values: dict[str, Any]) -> None:
    """Rules between serving keys, and the pushed model file itself (it is on this machine: check it now)."""
    engine = values["halo_serve"]
    if engine in ("none", "rpc-worker"):  # a worker needs no model: the head pushes the weights at load
        return
    model = values["halo_model"]
    if values["halo_models"]:
        _validate_models(host, values)
        return
    if values["halo_models_max"] is not None:
        raise ConfigError(host, "halo_models_max", values["halo_models_max"], "is for halo_models (router mode)")
    if model is None:
        raise ConfigError(
            host, "halo_model", None,
            f"a model is needed for halo_serve: {engine} (a path on the host, or a local file with "
            "halo_model_push: true); set halo_serve: none to prepare the host without serving",
        )
    _check_batch(host, values)
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
    _check_exposure(host, values)
    if values["halo_model_push"]:
        if engine == "vllm":
            raise ConfigError(host, "halo_model_push", True,
                              "pushing is for single GGUF files (llama-server); give vLLM a host path or HF id")
        problem = validators.check_file_name(PurePosixPath(model).name)
        if problem:
            raise ConfigError(host, "halo_model", model, f"the pushed file's name on the host {problem}")
        try:
            magic = localfiles.read_at(model, 0, 4)
        except localfiles.LocalFileRefused as error:
            raise ConfigError(host, "halo_model", model, f"{error} (halo_model_push)") from None
        if magic != GGUF_MAGIC:
            raise ConfigError(host, "halo_model", model, "not a GGUF file (it does not start with 'GGUF')")
        return
    problem = validators.check_absolute_path(model)
    if engine == "vllm" and problem and HF_MODEL_ID.fullmatch(model):
        return
    if problem:
        hint = " or a Hugging Face id like org/name" if engine == "vllm" else ""
        raise ConfigError(host, "halo_model", model,
                          f"must be an absolute path on the host{hint} ({problem.removeprefix('must be ')})")


def _check_batch(host: str, values: dict[str, Any]) -> None:
    if values["halo_llama_ubatch"] > values["halo_llama_batch"]:
        raise ConfigError(host, "halo_llama_ubatch", values["halo_llama_ubatch"],
                          f"must not exceed halo_llama_batch ({values['halo_llama_batch']})")
    v_type = values.get("halo_llama_kv_type_v") or values.get("halo_llama_kv_type", "f16")
    if values.get("halo_llama_flash_attn") == "off" and v_type not in ("f32", "f16", "bf16"):
        # llama.cpp refuses to create the context (the kvcache oracle's "quantized-v-without-fa" case)
        raise ConfigError(host, "halo_llama_flash_attn", "off",
                          f"a {v_type} V cache needs flash attention: set halo_llama_flash_attn on, or an f16 V type")


def _check_exposure(host: str, values: dict[str, Any]) -> None:
    """Beyond loopback, an engine without a key is refused unless the data says so."""
    bind = ipaddress.ip_address(values["halo_bind"])
    if not bind.is_loopback and values["halo_api_key"] is None and not values["halo_allow_unauthenticated"]:
        raise ConfigError(host, "halo_bind", values["halo_bind"],
                          "listening beyond loopback needs an API key: set halo_api_key (or "
                          "halo_allow_unauthenticated: true to serve anyone who can reach the port)")


def _validate_models(host: str, values: dict[str, Any]) -> None:
    """halo_models replaces the single-model keys; router mode is built for the distro's llama-server."""
    engine, specs = values["halo_serve"], values["halo_models"]
    for key in ("halo_model", "halo_model_sha256", "halo_model_alias"):
        if values[key] is not None:
            raise ConfigError(host, key, values[key], "set either halo_models or the single-model keys, not both")
    if values["halo_model_push"]:
        raise ConfigError(host, "halo_model_push", True, "halo_models pushes with a 'file' source instead")
    if engine == "llama-server" and values["halo_llama_source"] != "distro":
        raise ConfigError(host, "halo_llama_source", values["halo_llama_source"],
                          "halo_models (llama-server router mode) is built for halo_llama_source: distro")
    if engine == "vllm" and (len(specs) != 1 or specs[0].source != "hf"):
        raise ConfigError(host, "halo_models", [spec.name for spec in specs],
                          "vLLM serves one model: one entry with an hf source")
    if engine == "vllm" and values["halo_models_max"] is not None:
        raise ConfigError(host, "halo_models_max", values["halo_models_max"], "is for llama-server's router")
    _check_batch(host, values)
    if engine == "vllm" and values["halo_runtime"] != "podman":
        raise ConfigError(host, "halo_runtime", values["halo_runtime"], "vLLM is served by a podman Quadlet unit")
    _check_exposure(host, values)


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
