"""
What ``halo_models`` needs on one host, pure: from the resolved specs and the probe's view of their files to the
downloads and pushes still to do, the router preset, and the stamp that says which exact files the engine runs.
A model that cannot be served (a host path missing, not GGUF, or hashing wrong) refuses the host here, before
the first change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..contract.config import GGUF_MAGIC, HaloConfig, HostRefused
from ..contract.localfiles import sha256_of
from .specs import ModelFile, ModelSpec, render_preset


def local_sha256(path: str) -> str:
    """The sha256 of a regular file on this machine (a model to push): :func:`halofleet.contract.localfiles.sha256_of`."""
    return sha256_of(path)


@dataclass
class FileAction:
    spec: str  # the model's name
    file: ModelFile
    current: dict[str, Any] | None  # the probe's view of the file (None: absent)
    hub: bool = False  # an hf source: the token goes with this request (and only with these)


@dataclass
class ModelsPlan:
    specs: list[ModelSpec]
    directories: list[str]  # halo_model_dir/<name> of the fetched and pushed models (owned by the service user)
    downloads: list[FileAction] = field(default_factory=list)  # url/hf files (no-ops when verified already)
    pushes: list[FileAction] = field(default_factory=list)  # file sources
    preset: str | None = None  # llama-server's router preset (None for vLLM)
    models_max: int = 1
    stamp: str = ""
    token_needed: bool = False  # hf sources: the token file is written for curl

    serve_path: str = ""  # what the engine is given: the first model's GGUF (first shard), vLLM its directory


def _check_path(config: HaloConfig, spec: ModelSpec, item: ModelFile, current: dict[str, Any] | None) -> None:
    if not current:
        raise HostRefused(config.host, f"model {spec.name}: {item.host_path} does not exist on the host (halo_models "
                                       "path source)")
    if config.serve == "llama-server" and current.get("magic") != GGUF_MAGIC.decode():
        raise HostRefused(config.host, f"model {spec.name}: {item.host_path} is not a GGUF file")
    if item.sha256 and current.get("sha256") != item.sha256:
        raise HostRefused(config.host, f"model {spec.name}: {item.host_path} has SHA-256 {current.get('sha256')}, "
                                       "not the pinned one: corrupt or replaced")


def plan_models(config: HaloConfig, probe: dict[str, Any]) -> ModelsPlan:
    """Downloads, pushes, preset and stamp for ``config.models`` (resolved: every spec has its files)."""
    specs: list[ModelSpec] = config.models
    on_host = (probe.get("model_files") or {}).get("files") or {}
    plan = ModelsPlan(specs=specs, directories=[])
    identity = []
    for spec in specs:
        if not spec.resolved:
            raise HostRefused(config.host, f"model {spec.name}: its {spec.source} source is resolved when a deploy "
                                           "plans the host (hfhub.resolve_models: the Hub asked, pushed files hashed)")
        if spec.source != "path":
            plan.directories.append(spec.directory)
        plan.token_needed |= spec.source == "hf"
        for item in spec.files:
            current = on_host.get(item.host_path)
            if spec.source == "path":
                _check_path(config, spec, item, current)
            elif spec.source == "file":
                plan.pushes.append(FileAction(spec.name, item, current))
            else:
                plan.downloads.append(FileAction(spec.name, item, current, hub=spec.source == "hf"))
        # Files are named by content where a digest is known; a host path without one by size and mtime.
        files = [(item.host_path, item.sha256 or item.git_oid or
                  "{size}:{mtime}".format(**(on_host.get(item.host_path) or {"size": 0, "mtime": 0})))
                 for item in spec.files]
        identity.append([spec.name, spec.ctx or config.ctx, spec.keep_loaded, files])
    if config.serve == "llama-server":
        plan.preset = render_preset(config.host, specs, config.ctx)
        plan.models_max = config.models_max or len(specs)
    plan.serve_path = specs[0].directory if config.serve == "vllm" else specs[0].host_path
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    plan.stamp = f"models:{digest}"
    return plan
