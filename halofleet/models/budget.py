"""
Does it fit: the models a box may hold at once against its GTT budget, and one model split across the boxes of a
llama.cpp RPC group. Pure functions over :class:`halofleet.models.kvcache.Need`; a refusal is an :class:`OverBudget`
whose message names every number it was decided on.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .kvcache import GIB, Need

DEFAULT_MODELS_MAX = 4  # llama-server --models-max (router mode) default; 0 = unlimited


class OverBudget(ValueError):
    """The plan needs more memory than the budget(s) give."""


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def describe(need: Need) -> str:
    """``name: W GiB weights + K GiB KV at ctx C (kv_type) = T GiB``."""
    return (f"{need.name}: {_gib(need.weights)} GiB weights + {_gib(need.kv)} GiB KV at ctx {need.ctx} "
            f"({need.kv_type}) = {_gib(need.total)} GiB")


@dataclass(frozen=True)
class Row:
    need: Need
    keep_loaded: bool
    resident: bool  # counted: may be loaded while the others counted are


@dataclass(frozen=True)
class MemoryTable:
    rows: tuple[Row, ...]
    budget: int  # bytes (the GTT budget of the host's memory plan)
    models_max: int

    @property
    def resident_total(self) -> int:
        return sum(row.need.total for row in self.rows if row.resident)

    @property
    def fits(self) -> bool:
        return self.resident_total <= self.budget

    def refusal(self) -> str:
        """"" when it fits, else one line naming every resident model's numbers, the sum and the budget."""
        if self.fits:
            return ""
        parts = "; ".join(describe(row.need) for row in self.rows if row.resident)
        return (f"models that may be loaded at once need {_gib(self.resident_total)} GiB, over the GTT budget of "
                f"{_gib(self.budget)} GiB ({parts})")


def memory_table(models: list[tuple[Need, bool]], budget: int, models_max: int = DEFAULT_MODELS_MAX) -> MemoryTable:
    """
    The table for ``models`` as ``(need, keep_loaded)`` on a box with ``budget`` bytes of GTT. Resident at once:
    every keep_loaded model, plus the largest of the others up to ``models_max`` models in all (0: no limit, all of
    them) -- the worst case of llama-server's router loading models on demand.
    [U] whether keep_loaded models count toward --models-max: counted here, so more keep_loaded models than
    models_max are all resident anyway (the router cannot evict them).
    """
    if models_max < 0:
        raise ValueError(f"models_max {models_max} must be 0 (no limit) or more")
    keep = [index for index, (_, kept) in enumerate(models) if kept]
    others = sorted((index for index, (_, kept) in enumerate(models) if not kept),
                    key=lambda index: (-models[index][0].total, index))
    room = len(others) if models_max == 0 else max(models_max - len(keep), 0)
    resident = set(keep) | set(others[:room])
    rows = tuple(Row(need, kept, index in resident) for index, (need, kept) in enumerate(models))
    return MemoryTable(rows, budget, models_max)


def check_memory(models: list[tuple[Need, bool]], budget: int,
                 models_max: int = DEFAULT_MODELS_MAX) -> MemoryTable:
    """:func:`memory_table`, raising :class:`OverBudget` when the resident models do not fit."""
    table = memory_table(models, budget, models_max)
    if not table.fits:
        raise OverBudget(table.refusal())
    return table


@dataclass(frozen=True)
class Share:
    box: str
    budget: int
    layers: tuple[int, ...]  # block indices llama.cpp puts on this box (the output layer is block count)
    bytes: int

    @property
    def fits(self) -> bool:
        return self.bytes <= self.budget


@dataclass(frozen=True)
class Split:
    need: Need
    shares: tuple[Share, ...]
    ratios: tuple[float, ...]
    source: str  # "free memory" (llama.cpp's default, the budgets standing in) or "--tensor-split"

    @property
    def budget(self) -> int:
        return sum(share.budget for share in self.shares)

    @property
    def fits(self) -> bool:
        return self.need.total <= self.budget and all(share.fits for share in self.shares)

    def refusal(self) -> str:
        """"" when it fits, else one line with the need, every box's share and budget, and what is wrong."""
        if self.fits:
            return ""
        shares = ", ".join(f"{s.box} {_gib(s.bytes)} of {_gib(s.budget)} GiB" for s in self.shares)
        over = [s.box for s in self.shares if not s.fits]
        why = (f"needs more than the {_gib(self.budget)} GiB the group has" if self.need.total > self.budget
               else f"{', '.join(over)} over budget")
        return f"{describe(self.need)} {why}: split by {self.source}: {shares}"


def split_across(need: Need, boxes: list[tuple[str, int]], tensor_split: list[float] | None = None) -> Split:
    """
    How llama-server with ``--rpc`` spreads ``need`` over ``boxes`` (``(name, budget bytes)`` in llama.cpp's device
    order: the ``--rpc`` workers in order, then the head's own GPU last -- llama.cpp puts RPC devices first).

    llama_model::load_tensors: split points are the cumulative ratios (``--tensor-split``, else each device's free
    memory; the budgets stand in for it [U: free memory at load time is what llama.cpp reads]); with ``-ngl 999``
    block il (and the output layer as il = block count) goes to the first device whose split point exceeds
    il / (blocks + 1). A block's KV cache stays with it. The token embeddings stay on the head's CPU: counted on
    the head here, since its RAM is the same memory [U].
    """
    if not boxes:
        raise ValueError("an RPC split needs at least one box")
    if tensor_split is not None and len(tensor_split) != len(boxes):
        raise ValueError(f"--tensor-split has {len(tensor_split)} values for {len(boxes)} devices")
    if tensor_split is not None and any(value < 0 for value in tensor_split):
        raise ValueError("--tensor-split values must not be negative")
    given = tensor_split is not None and any(value > 0 for value in tensor_split)
    weights = [float(value) for value in tensor_split] if given and tensor_split else [float(b) for _, b in boxes]
    if sum(weights) <= 0:
        raise ValueError("the boxes have no memory to split over")
    points, running = [], 0.0
    for value in weights:
        running += value
        points.append(running)
    points = [point / running for point in points]
    blocks = len(need.layer_bytes)
    placed: list[list[int]] = [[] for _ in boxes]
    sizes = [0] * len(boxes)
    for il in range(blocks + 1):
        device = bisect.bisect_right(points, il / (blocks + 1))  # std::upper_bound; the last point is 1.0
        placed[device].append(il)
        sizes[device] += need.layer_bytes[il] if il < blocks else need.output_bytes
    sizes[-1] += need.input_bytes
    shares = tuple(Share(name, budget, tuple(layers), size)
                   for (name, budget), layers, size in zip(boxes, placed, sizes))
    ratios = tuple(value / running for value in weights)
    return Split(need, shares, ratios, "--tensor-split" if given else "free memory")


def check_split(need: Need, boxes: list[tuple[str, int]], tensor_split: list[float] | None = None) -> Split:
    """:func:`split_across`, raising :class:`OverBudget` when a box's share or the sum does not fit."""
    split = split_across(need, boxes, tensor_split)
    if not split.fits:
        raise OverBudget(split.refusal())
    return split


def table_rows(table: MemoryTable, sources: dict[str, str] | None = None) -> list[dict]:
    """The table as JSON-ready rows (GiB rounded to 0.01; bytes exact)."""
    return [{"model": row.need.name, "architecture": row.need.architecture, "ctx": row.need.ctx,
             "ctx_source": (sources or {}).get(row.need.name, ""), "kv_type": row.need.kv_type,
             "weights_gib": round(row.need.weights / GIB, 2), "kv_gib": round(row.need.kv / GIB, 2),
             "total_gib": round(row.need.total / GIB, 2), "weights_bytes": row.need.weights,
             "kv_bytes": row.need.kv, "keep_loaded": row.keep_loaded, "resident": row.resident,
             "notes": list(row.need.notes)} for row in table.rows]


def format_table(table: MemoryTable) -> list[str]:
    """Text lines: one per model, then the resident sum against the budget."""
    width = max([len("model")] + [len(row.need.name) for row in table.rows])
    lines = [f"  {'model'.ljust(width)}  {'weights GiB':>11}  {'KV GiB':>8}  {'ctx':>7}  {'total GiB':>9}  at once"]
    for row in table.rows:
        need = row.need
        lines.append(f"  {need.name.ljust(width)}  {_gib(need.weights):>11}  {_gib(need.kv):>8}  {need.ctx:>7}  "
                     f"{_gib(need.total):>9}  {'yes' if row.resident else 'no'}")
        lines += [f"  {' ' * width}  note: {note}" for note in need.notes]
    limit = "no limit" if table.models_max == 0 else f"at most {table.models_max}"
    lines.append(f"  loaded at once ({limit}): {_gib(table.resident_total)} GiB of the {_gib(table.budget)} GiB "
                 f"GTT budget: {'fits' if table.fits else 'OVER BUDGET'}")
    return lines


def split_json(split: Split) -> dict:
    return {"model": split.need.name, "source": split.source, "need_gib": round(split.need.total / GIB, 2),
            "budget_gib": round(split.budget / GIB, 2), "fits": split.fits,
            "boxes": [{"box": share.box, "ratio": round(ratio, 4), "layers": len(share.layers),
                       "gib": round(share.bytes / GIB, 2), "budget_gib": round(share.budget / GIB, 2),
                       "bytes": share.bytes, "fits": share.fits}
                      for share, ratio in zip(split.shares, split.ratios)]}


def format_split(split: Split) -> list[str]:
    width = max(len(share.box) for share in split.shares)
    lines = [f"  split of {split.need.name} ({_gib(split.need.total)} GiB) by {split.source}, in llama.cpp's device "
             f"order (--rpc workers, then the head):"]
    for share, ratio in zip(split.shares, split.ratios):
        lines.append(f"  {share.box.ljust(width)}  {ratio:6.1%}  {len(share.layers):>3} layers  "
                     f"{_gib(share.bytes):>8} of {_gib(share.budget)} GiB  {'ok' if share.fits else 'OVER'}")
    lines.append(f"  group: {_gib(split.need.total)} of {_gib(split.budget)} GiB: "
                 f"{'fits' if split.fits else 'OVER BUDGET'}")
    return lines
