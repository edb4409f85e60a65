"""
Does what a host will serve fit its memory: the KV-aware accounting of :mod:`halofleet.models.kvcache` and
:mod:`halofleet.models.budget` applied to a host's plan in preflight, before the first change.

The GGUF headers are read where the bytes are now: a pushed file on this machine, a file already on the host (over
SSH, in bounded slices), or, for a download not made yet, its source over HTTP range requests from this machine
(:mod:`halofleet.models.http`: the token only to the Hub's origin, every read bounded; a read over a bound refuses
the host). Over budget refuses the host with every number; a model whose header cannot
be read is reported as not checked (the download itself would then fail with its own reason).
"""

from __future__ import annotations

import http.client
from typing import Any, Callable

from ..contract.config import HaloConfig, HostRefused
from . import http as bounded
from .budget import OverBudget, check_memory, check_split, format_split, format_table
from .kvcache import EngineFlags, KVError, Need, need_from_reader, need_of_file
from .specs import ModelSpec

GIB = 1 << 30
# reader(path)(offset, length): bytes of a file on the host being planned (facts.model_header.host_reader)
Reader = Callable[[str], Callable[[int, int], bytes | None]]


def http_reader(token: str | None = None, token_origin: str | None = None,
                reads: bounded.Reads | None = None) -> Reader:
    """
    ``reader(url)(offset, length)`` over HTTP ranges through ``reads`` (this host's bounded reads): None when the
    source cannot be read; a bound or the rule broken (:class:`halofleet.models.http.ReadRefused`) is raised. The
    token goes only to ``token_origin`` (the Hub's), never along a redirect elsewhere.
    """
    reads = reads or bounded.Reads()

    def for_url(url: str) -> Callable[[int, int], bytes | None]:
        def read(offset: int, length: int) -> bytes | None:
            headers = {"Range": f"bytes={offset}-{offset + length - 1}", "User-Agent": "halofleet"}
            if token and bounded.may_carry_token(url, token_origin):
                headers["Authorization"] = f"Bearer {token}"
            try:
                answer = reads.get(url, headers, max_bytes=offset + length, take=offset + length)
            except (bounded.HttpStatus, OSError, ValueError, http.client.HTTPException):
                return None
            # A server ignoring Range (200) sends the file from its start.
            return answer.body[offset:] if answer.status == 200 else answer.body[:length]
        return read
    return for_url


def _engine_options(config: HaloConfig) -> dict[str, Any]:
    """The llama-server flags the unit passes that size memory (EngineFlags, which serving._llama_args renders);
    the K cache type goes as need_of_*'s own argument."""
    return {key: value for key, value in EngineFlags.of(config).sizing().items() if key != "kv_type"}


def _spec_need(config: HaloConfig, spec: ModelSpec, on_host: dict[str, Any], host_reader: Reader,
               reads: bounded.Reads | None) -> Need:
    ctx, options = spec.ctx or config.ctx, {**_engine_options(config), "name": spec.name}
    first = spec.host_path
    if first in on_host:
        return need_from_reader(host_reader, first, ctx, config.llama_kv_type, **options)
    source = next(item for item in spec.files if item.host_path == first)
    if source.local:
        return need_of_file(source.local, ctx, config.llama_kv_type, **options)
    token = config.hf_token if spec.source == "hf" else None
    return need_from_reader(http_reader(token, config.hf_endpoint, reads), source.url, ctx, config.llama_kv_type,
                            **options)


def served_needs(config: HaloConfig, probe: dict[str, Any], host_reader: Reader,
                 reads: bounded.Reads | None = None) -> tuple[list[tuple[Need, bool]], list[str]]:
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
                needs.append((_spec_need(config, spec, on_host, host_reader, reads), spec.keep_loaded))
            except bounded.ReadRefused as error:
                raise HostRefused(config.host, f"model {spec.name}: its GGUF header: {error}; nothing was changed") \
                    from None
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


def check_host_memory(plan: Any, host_reader: Reader, worker_gtt: dict[str, int],
                      reads: bounded.Reads | None = None) -> list[str]:
    """
    Preflight's memory lines for ``plan`` (a :class:`halofleet.box.plan.HostPlan`): the models resident at once
    against the host's GTT budget, or the RPC group's split (``worker_gtt``: each worker's GTT bytes by name).
    Raises HostRefused over budget.
    """
    config = plan.config
    needs, unknown = served_needs(config, plan.probe, host_reader, reads)
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
