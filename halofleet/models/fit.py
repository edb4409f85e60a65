"""
Does what a host will serve fit its memory: the KV-aware accounting of :mod:`halofleet.models.kvcache` and
:mod:`halofleet.models.budget` applied to a host's plan in preflight, before the first change.

The GGUF headers are read where the bytes are now: a pushed file on this machine, a file already on the host (over
SSH, in bounded slices), or, for a download not made yet, its source over HTTP range requests from this machine (the
Hub's token only to the Hub's own host). Over budget refuses the host with every number; a model whose header cannot
be read is reported as not checked (the download itself would then fail with its own reason).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Callable
from urllib.parse import urlsplit

from ..contract.config import HaloConfig, HostRefused
from .budget import OverBudget, check_memory, check_split, format_split, format_table
from .kvcache import EngineFlags, KVError, Need, need_from_reader, need_of_file
from .specs import ModelSpec

GIB = 1 << 30
# reader(path)(offset, length): bytes of a file on the host being planned (facts.model_header.host_reader)
Reader = Callable[[str], Callable[[int, int], bytes | None]]
HTTP_TIMEOUT_S = 30


class _NoAuthToOtherHosts(urllib.request.HTTPRedirectHandler):
    """The Hub redirects downloads to a CDN: the token stays with the host it was meant for."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def http_reader(token: str | None = None) -> Callable[[str], Callable[[int, int], bytes | None]]:
    """``reader(url)(offset, length)`` over HTTP ranges (None when the source cannot be read)."""
    opener = urllib.request.build_opener(_NoAuthToOtherHosts())

    def for_url(url: str) -> Callable[[int, int], bytes | None]:
        def read(offset: int, length: int) -> bytes | None:
            headers = {"Range": f"bytes={offset}-{offset + length - 1}", "User-Agent": "halofleet"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                with opener.open(urllib.request.Request(url, headers=headers), timeout=HTTP_TIMEOUT_S) as response:
                    if response.status == 200 and offset:  # a server ignoring Range sends the file from its start
                        response.read(offset)
                    return response.read(length)
            except (urllib.error.URLError, OSError, ValueError):
                return None
        return read
    return for_url


def _engine_options(config: HaloConfig) -> dict[str, Any]:
    """The llama-server flags the unit passes that size memory (EngineFlags, which serving._llama_args renders);
    the K cache type goes as need_of_*'s own argument."""
    return {key: value for key, value in EngineFlags.of(config).sizing().items() if key != "kv_type"}


def _spec_need(config: HaloConfig, spec: ModelSpec, on_host: dict[str, Any], host_reader: Reader) -> Need:
    ctx, options = spec.ctx or config.ctx, {**_engine_options(config), "name": spec.name}
    first = spec.host_path
    if first in on_host:
        return need_from_reader(host_reader, first, ctx, config.llama_kv_type, **options)
    source = next(item for item in spec.files if item.host_path == first)
    if source.local:
        return need_of_file(source.local, ctx, config.llama_kv_type, **options)
    token = config.hf_token if spec.source == "hf" else None
    return need_from_reader(http_reader(token), source.url, ctx, config.llama_kv_type, **options)


def served_needs(config: HaloConfig, probe: dict[str, Any], host_reader: Reader) -> tuple[list[tuple[Need, bool]], list[str]]:
    """
    ``(need, keep_loaded)`` of every GGUF model the host's llama-server will serve, and a note per model that could
    not be sized. vLLM (safetensors) is sized by its own ``--gpu-memory-utilization``, not here.
    """
    if config.serve != "llama-server":
        return [], []
    needs, unknown = [], []
    if config.models:
        on_host = (probe.get("model_files") or {}).get("files") or {}
        for spec in config.models:
            try:
                needs.append((_spec_need(config, spec, on_host, host_reader), spec.keep_loaded))
            except (KVError, StopIteration, TypeError) as error:
                unknown.append(f"{spec.name}: {error or 'no readable GGUF header'}")
        return needs, unknown
    options = {**_engine_options(config), "name": config.model_alias or config.model.rsplit("/", 1)[-1]}
    try:
        if config.model_push:
            needs.append((need_of_file(config.model, config.ctx, config.llama_kv_type, **options), True))
        elif (probe.get("model") or {}).get("kind") == "file":
            needs.append((need_from_reader(host_reader, config.model, config.ctx, config.llama_kv_type, **options), True))
    except KVError as error:
        unknown.append(f"{config.model}: {error}")
    return needs, unknown


def check_host_memory(plan: Any, host_reader: Reader, worker_gtt: dict[str, int]) -> list[str]:
    """
    Preflight's memory lines for ``plan`` (a :class:`halofleet.box.plan.HostPlan`): the models resident at once
    against the host's GTT budget, or the RPC group's split (``worker_gtt``: each worker's GTT bytes by name).
    Raises HostRefused over budget.
    """
    config = plan.config
    needs, unknown = served_needs(config, plan.probe, host_reader)
    lines = [f"memory of {each} not checked (header unreadable)" for each in unknown]
    budget = plan.gtt.gtt_gib * GIB
    try:
        if needs and config.rpc_workers:
            # llama.cpp's device order: the --rpc workers in order, then the head's own GPU.
            boxes = [(name, worker_gtt[name]) for name in config.rpc_workers] + [(config.host, budget)]
            lines += format_split(check_split(needs[0][0], boxes, config.tensor_split))
        elif needs:
            models_max = (config.models_max or len(needs)) if config.models else 1
            lines += format_table(check_memory(needs, budget, models_max))
    except OverBudget as error:
        raise HostRefused(config.host, f"does not fit: {error}") from None
    return lines
