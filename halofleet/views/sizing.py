"""
``halofleet plan --model``: the memory table (and an RPC group's split) for local GGUF files, from the host plan's
GTT budget. Glue between the CLI, :mod:`halofleet.models.kvcache` (reads the files) and :mod:`halofleet.models.budget` (pure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..box.gtt import plan_gtt
from ..contract import validators
from ..contract.config import OPTIONS
from ..models.budget import (  # noqa: F401 (DEFAULT_MODELS_MAX: the CLI's default, read here)
    DEFAULT_MODELS_MAX,
    MemoryTable,
    Split,
    format_split,
    format_table,
    memory_table,
    split_across,
    split_json,
    table_rows,
)
from ..models.kvcache import GIB, EngineFlags, Need, need_of_file

CTX_RANGE = (OPTIONS["halo_ctx"].minimum, OPTIONS["halo_ctx"].maximum)
KV_CHOICES = tuple(OPTIONS["halo_llama_kv_type"].choices)


def has_ctx(spec: str) -> bool:
    """Whether ``spec`` is ``PATH@CTX`` (digits after the last @); a path with any other @ is a path."""
    path, sep, tail = spec.rpartition("@")
    return bool(sep and path and tail.isascii() and tail.isdigit())


def parse_model(spec: str, default_ctx: int, default_source: str) -> tuple[str, int, str]:
    """(path, ctx, where the ctx came from) of a ``--model`` value."""
    if not spec.strip():
        raise ValueError(f"--model {spec!r}: give a GGUF path, optionally PATH@CTX")
    if not has_ctx(spec):
        return spec, default_ctx, default_source
    path, _, tail = spec.rpartition("@")
    ctx = int(tail)
    if not CTX_RANGE[0] <= ctx <= CTX_RANGE[1]:
        raise ValueError(f"--model {spec!r}: ctx {ctx} is not in {CTX_RANGE[0]}..{CTX_RANGE[1]}")
    return path, ctx, f"{path}@{ctx}"


def parse_tensor_split(text: str | list[float] | None, devices: int) -> list[float] | None:
    """
    ``--tensor-split 3,1`` as numbers, one per device (workers, then the head); None when not given. The numbers
    follow halo_tensor_split's grammar (:func:`halofleet.contract.validators.parse_tensor_split`; the CLI's click
    type has checked them already when it passes a list).
    """
    if text is None:
        return None
    try:
        values = validators.parse_tensor_split(text) if isinstance(text, str) else list(text)
    except ValueError as error:
        raise ValueError(f"--tensor-split {error}") from None
    shown = text if isinstance(text, str) else ",".join(f"{value:g}" for value in values)
    if len(values) != devices:
        raise ValueError(f"--tensor-split {shown!r}: {len(values)} values for {devices} devices "
                         f"({devices - 1} workers and the head)")
    return values


@dataclass
class Sizing:
    table: MemoryTable
    sources: dict[str, str]
    split: Split | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def refusal(self) -> str:
        return self.split.refusal() if self.split is not None else self.table.refusal()

    def lines(self) -> list[str]:
        ctx = sorted(set(self.sources.values()))
        flags = self.settings
        kv = flags["kv_type"] if flags["kv_type_v"] == flags["kv_type"] else \
            f"K {flags['kv_type']} V {flags['kv_type_v']}"
        extra = "".join(f", {flag}" for flag, on in (("--kv-unified", flags["unified"]),
                                                     ("--swa-full", flags["swa_full"]),
                                                     ("-fa off", not flags["flash_attn"])) if on)
        head = f"memory (KV {kv}, -np {flags['parallel']}{extra}, ctx from {', '.join(ctx)}):"
        if self.split is not None:
            return [head] + format_table(self.table)[:-1] + format_split(self.split)
        return [head] + format_table(self.table)

    def as_json(self) -> dict:
        result: dict[str, Any] = {"memory": {
            **self.settings, "budget_gib": round(self.table.budget / GIB, 2),
            "models_max": self.table.models_max,
            "resident_total_gib": round(self.table.resident_total / GIB, 2),
            "fits": self.table.fits if self.split is None else self.split.fits,
            "rows": table_rows(self.table, self.sources)}}
        if self.split is not None:
            result["rpc_split"] = split_json(self.split)
        return result


def size(host_plan: Any, models: tuple[str, ...], *, ctx: int | None, models_max: int,
         worker_ram: tuple[int, ...] = (), tensor_split: str | list[float] | None = None, served: bool = False) -> Sizing | None:
    """
    The memory table for ``models`` (``--model`` values) on the box of ``host_plan``; None when there is none to
    make (no --model, or only --serve's model and it is not a local file). Raises ValueError (KVError included)
    with a one-line reason.
    """
    if not models or (served and len(models) == 1 and not os.path.isfile(models[0].rpartition("@")[0]
                                                                          if has_ctx(models[0]) else models[0])):
        if worker_ram or tensor_split is not None:
            raise ValueError("--rpc-worker-ram-gib and --tensor-split need a local GGUF --model to split")
        return None
    config = host_plan.config
    flags = EngineFlags.of(config)  # what the unit passes (box.serving renders the same flags)
    default_ctx, default_source = (ctx, "--ctx") if ctx is not None else (config.ctx, "halo_ctx")
    settings = flags.sizing()
    needs: list[tuple[Need, bool]] = []
    sources: dict[str, str] = {}
    for spec in models:
        path, model_ctx, source = parse_model(spec, default_ctx, default_source)
        name = os.path.basename(path) or path
        if name in sources:
            name = path
        need = need_of_file(path, model_ctx, name=name, **settings)
        needs.append((need, False))
        sources[name] = source
    budget = host_plan.gtt.gtt_gib * GIB
    table = memory_table(needs, budget, models_max)
    sizing = Sizing(table, sources, settings=settings)
    if worker_ram or tensor_split is not None:
        if len(needs) != 1:
            raise ValueError("--rpc-worker-ram-gib splits one model across the group: give one --model")
        boxes = []
        for index, ram in enumerate(worker_ram, 1):
            try:
                boxes.append((f"worker{index}", plan_gtt(ram, host_plan.gtt.reserve_gib).gtt_gib * GIB))
            except ValueError as error:
                raise ValueError(f"--rpc-worker-ram-gib {ram} (worker{index}): OS reserve "
                                 f"{host_plan.gtt.reserve_gib} GiB {error}") from None
        boxes.append(("head", budget))
        sizing.split = split_across(needs[0][0], boxes, parse_tensor_split(tensor_split, len(boxes)))
    return sizing
